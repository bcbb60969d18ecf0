"""Map identifiers shared by the archive index, the catalog readers and every output.

A map (one MDGM, one sol) is named ``<subphase>_<sol:03d>`` in lower case, e.g. ``r18_040``
(MOC subphase R18, sol 40 of that subphase) or ``d01_005`` (MARCI ``D01_day05``). The archive
index and the storm catalog both build ``map_id`` with :func:`make_map_id`, so they join on it.
A file name that is not UTF-8 becomes text every output takes with :func:`printable`.
"""

from __future__ import annotations

import os
import re

_MAP_NAME = re.compile(r"^\s*([A-Za-z]+[0-9]*)[_-](?:day)?([0-9]+)\s*$", re.IGNORECASE)


def make_map_id(subphase: str, sol: int) -> str:
    """Canonical map id from a mission subphase and sol number: ``("R18", 40) -> "r18_040"``."""
    subphase = str(subphase).strip()
    if not subphase:
        raise ValueError("empty mission subphase")
    sol_int = int(sol)
    if sol_int < 0:
        raise ValueError(f"sol must be >= 0, got {sol}")
    return f"{subphase.lower()}_{sol_int:03d}"


def parse_map_name(name: str) -> tuple[str, int]:
    """Split a map name into ``(SUBPHASE, sol)``.

    Accepts the archive's file stems (``r18_040``, ``s20_23``) and MDAD v1.1 day names
    (``D01_day05``). The subphase comes back upper case, as MDAD writes it.

    Raises
    ------
    ValueError
        If the name is not of either form.
    """
    match = _MAP_NAME.match(str(name))
    if not match:
        raise ValueError(
            f"map name {name!r} is not of the form SUBPHASE_SOL (e.g. 'r18_040') or SUBPHASE_dayNN (e.g. 'D01_day05')"
        )
    return match.group(1).upper(), int(match.group(2))


def printable(text: str) -> str:
    """``text`` with the bytes of a file name that were not UTF-8 written as ``\\xNN``, so any UTF-8 output takes it.

    Python decodes such bytes of a file name to lone surrogates (``os.fsdecode``), which no UTF-8
    file, table or message can hold; other text comes back unchanged. ``b"bad\\xffname"`` as a
    name gives ``"bad\\\\xffname"``.
    """
    return os.fsencode(text).decode("utf-8", "backslashreplace")
