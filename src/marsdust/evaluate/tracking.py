"""How well a member/sequence assignment agrees with a catalog's: standard tracking metrics.

Both tables are storm tables (one row per storm instance: ``map_id, lon, lat, area_km2,
member_id, sequence_id`` and, where known, ``polygon_wkt``). The *predicted* one is usually
:func:`marsdust.track.track`'s output (on detections, or on the catalog's own instances with their
ids removed); the *truth* is the catalog.

Instance matching (:func:`match_instances`)
-------------------------------------------
Instances are matched one-to-one within each map (same ``map_id``):

* when every instance of the map in both tables has an outline, a pair is eligible if the
  outlines' intersection over union (:func:`marsdust.evaluate.matching.outline_iou`: lon/lat
  degrees², both outlines being on the same map) is at least ``min_iou`` (0.1), and the pairs
  maximizing the summed IoU are chosen (:func:`scipy.optimize.linear_sum_assignment`);
* otherwise a pair is eligible if the centroids are at most ``max_center_km`` (300 km) apart on
  the sphere, and the pairs minimizing the summed distance are chosen.

When the two tables hold the same instances in the same order (same ``map_id``, ``lon``,
``lat``: tracking the catalog's own instances), row *i* matches row *i*.

Metrics (:func:`tracking_scores`)
---------------------------------
* **Pairwise links** (on matched instances): a *link* is an unordered pair of instances on
  different maps in the same member. Precision = predicted links that are true links / predicted
  links; recall = true links that are predicted links / true links; F1 their harmonic mean.
  Every pair in a member counts, not only consecutive ones, so a long member weighs more.
  ``sequence_links`` scores the same pairs with each true member that belongs to a sequence
  replaced by its sequence: a link between consecutive members of one catalogued sequence is
  then correct (a tracker sees such a chain as one storm moving on when each member starts
  where and when the previous one ended).
* **Member purity** (on matched instances): Σ over predicted members of the instances of its most
  common true member, / matched instances (1 = no predicted member mixes true members: no
  merges). **Completeness**: Σ over true members of the instances in its most common predicted
  member, / matched instances (1 = no true member is cut: no splits). ``n_merged`` counts
  predicted members holding instances of more than one true member, ``n_split`` true members
  spread over more than one predicted member.
* **IDF1** (Ristani et al. 2016, the MOTChallenge identity metric): predicted and true members
  are paired one-to-one to maximize the matched instances they share (IDTP, Hungarian
  assignment on the member × member overlap counts); IDP = IDTP / predicted instances, IDR =
  IDTP / true instances, IDF1 = 2 IDTP / (predicted + true instances). Unmatched instances
  (missed storms, false detections) count against it.
* **Sequences**: a true sequence (non-empty ``sequence_id`` in the truth) counts only if its
  instances lie on at least ``min_sequence_maps`` distinct maps of the truth table (MDAD's 3:
  fewer could not be called a sequence from these maps); those left out are counted as
  ``n_truth_unobservable``. A true sequence is *recalled* when one predicted sequence holds at
  least ``sequence_share`` (½) of its instances (through the matching); a predicted sequence is
  *correct* when one true sequence holds at least that share of its instances (unmatched ones
  count against). Recall = recalled / true sequences, precision = correct / predicted sequences.

Ratios whose denominator is zero are ``None`` (JSON ``null``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from marsdust.evaluate.matching import has_outline, outline_iou
from marsdust.track import great_circle_km, id_strings

DEFAULT_MIN_IOU = 0.1
DEFAULT_MAX_CENTER_KM = 300.0
DEFAULT_SEQUENCE_SHARE = 0.5
DEFAULT_MIN_SEQUENCE_MAPS = 3


def _same_instances(predicted: pd.DataFrame, truth: pd.DataFrame) -> bool:
    if len(predicted) != len(truth):
        return False
    return bool((predicted["map_id"].astype(str).to_numpy() == truth["map_id"].astype(str).to_numpy()).all()
                and np.allclose(predicted["lon"].to_numpy(float), truth["lon"].to_numpy(float))
                and np.allclose(predicted["lat"].to_numpy(float), truth["lat"].to_numpy(float)))


def match_instances(predicted: pd.DataFrame, truth: pd.DataFrame, *, min_iou: float = DEFAULT_MIN_IOU,
                    max_center_km: float = DEFAULT_MAX_CENTER_KM) -> pd.DataFrame:
    """Match predicted instances to truth instances one-to-one within each map (rule: module docstring).

    Returns
    -------
    DataFrame
        One row per matched pair: ``pred_row, truth_row`` (positions in the two tables),
        ``map_id``, ``rule`` (``"same rows"``, ``"iou"`` or ``"center"``) and ``value`` (the IoU,
        or the centroid distance in km; 1.0 for same rows).
    """
    columns = ["pred_row", "truth_row", "map_id", "rule", "value"]
    if _same_instances(predicted, truth):
        rows = np.arange(len(truth))
        return pd.DataFrame({"pred_row": rows, "truth_row": rows, "map_id": truth["map_id"].astype(str).to_numpy(),
                             "rule": "same rows", "value": 1.0}, columns=columns)
    from scipy.optimize import linear_sum_assignment

    pred = predicted.reset_index(drop=True)
    true = truth.reset_index(drop=True)
    pred_wkt = pred["polygon_wkt"] if "polygon_wkt" in pred.columns else pd.Series([None] * len(pred))
    true_wkt = true["polygon_wkt"] if "polygon_wkt" in true.columns else pd.Series([None] * len(true))
    pairs = []
    truth_by_map = {str(k): v for k, v in true.groupby(true["map_id"].astype(str)).indices.items()}
    for map_id, pred_rows in pred.groupby(pred["map_id"].astype(str)).indices.items():
        true_rows = truth_by_map.get(str(map_id))
        if true_rows is None:
            continue
        use_iou = has_outline(pred_wkt.iloc[pred_rows]).all() and has_outline(true_wkt.iloc[true_rows]).all()
        if use_iou:
            value = outline_iou(pred_wkt.iloc[pred_rows], true_wkt.iloc[true_rows])
            eligible, cost = value >= min_iou, -value
        else:
            value = great_circle_km(pred["lon"].to_numpy(float)[pred_rows][:, None],
                                    pred["lat"].to_numpy(float)[pred_rows][:, None],
                                    true["lon"].to_numpy(float)[true_rows][None, :],
                                    true["lat"].to_numpy(float)[true_rows][None, :])
            eligible, cost = value <= max_center_km, value
        big = 1e9  # ineligible pairs get a prohibitive cost and are dropped after the assignment
        for i, j in zip(*linear_sum_assignment(np.where(eligible, cost, big))):
            if eligible[i, j]:
                pairs.append((int(pred_rows[i]), int(true_rows[j]), str(map_id), "iou" if use_iou else "center",
                              float(value[i, j])))
    return pd.DataFrame(pairs, columns=columns)


def _ids(table: pd.DataFrame, column: str, prefix: str) -> np.ndarray:
    """Ids of ``column`` as strings; an empty or missing id becomes one of its own (``<prefix><row>``)."""
    if column not in table.columns:
        return np.array([f"{prefix}{k}" for k in range(len(table))], dtype=object)
    values = id_strings(table[column]).to_numpy(dtype=object)
    return np.array([v if v.strip() else f"{prefix}{k}" for k, v in enumerate(values)], dtype=object)


def _cross_map_pairs(frame: pd.DataFrame, keys: list[str]) -> int:
    """Unordered pairs of rows sharing ``keys`` but lying on different maps (``map_id``)."""
    if len(frame) == 0:
        return 0
    per_group = frame.groupby(keys).size().to_numpy(dtype=np.int64)
    per_map = frame.groupby(keys + ["map_id"]).size().to_numpy(dtype=np.int64)
    return int((per_group * (per_group - 1) // 2).sum() - (per_map * (per_map - 1) // 2).sum())


def _ratio(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else float(numerator) / float(denominator)


def _f1(precision: float | None, recall: float | None) -> float | None:
    if precision is None or recall is None:
        return None
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _link_scores(matched: pd.DataFrame) -> dict:
    predicted = _cross_map_pairs(matched, ["pred_member"])
    true = _cross_map_pairs(matched, ["truth_member"])
    correct = _cross_map_pairs(matched, ["pred_member", "truth_member"])
    precision, recall = _ratio(correct, predicted), _ratio(correct, true)
    return {"predicted": predicted, "true": true, "correct": correct, "precision": precision, "recall": recall,
            "f1": _f1(precision, recall)}


def _member_scores(matched: pd.DataFrame, n_pred_members: int, n_truth_members: int) -> dict:
    counts = matched.groupby(["pred_member", "truth_member"]).size()
    n = len(matched)
    if n == 0:
        return {"n_predicted": n_pred_members, "n_truth": n_truth_members, "purity": None, "completeness": None,
                "n_merged": 0, "n_split": 0}
    return {
        "n_predicted": n_pred_members, "n_truth": n_truth_members,
        "purity": float(counts.groupby(level="pred_member").max().sum() / n),
        "completeness": float(counts.groupby(level="truth_member").max().sum() / n),
        "n_merged": int((counts.groupby(level="pred_member").size() > 1).sum()),
        "n_split": int((counts.groupby(level="truth_member").size() > 1).sum()),
    }


def _identity_scores(matched: pd.DataFrame, n_pred: int, n_truth: int) -> dict:
    """IDF1: one-to-one member pairing maximizing shared instances (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    idtp = 0
    if len(matched):
        overlap = pd.crosstab(matched["pred_member"], matched["truth_member"]).to_numpy()
        rows, cols = linear_sum_assignment(overlap, maximize=True)
        idtp = int(overlap[rows, cols].sum())
    return {"idtp": idtp, "idp": _ratio(idtp, n_pred), "idr": _ratio(idtp, n_truth),
            "idf1": _ratio(2 * idtp, n_pred + n_truth)}


def _sequence_scores(predicted: pd.DataFrame, truth: pd.DataFrame, pairs: pd.DataFrame, share: float,
                     min_maps: int) -> dict:
    pred_seq = id_strings(predicted["sequence_id"] if "sequence_id" in predicted else [""] * len(predicted)).to_numpy()
    true_seq = id_strings(truth["sequence_id"] if "sequence_id" in truth else [""] * len(truth)).to_numpy()
    truth_maps = truth["map_id"].astype(str).to_numpy()
    true_groups = pd.Series(np.arange(len(truth))).groupby(true_seq).apply(list).to_dict()
    true_groups.pop("", None)
    observable = {s: rows for s, rows in true_groups.items() if len(set(truth_maps[rows])) >= min_maps}
    pred_groups = pd.Series(np.arange(len(predicted))).groupby(pred_seq).apply(list).to_dict() if len(predicted) else {}
    pred_groups.pop("", None)
    pred_of_truth = dict(zip(pairs["truth_row"], pairs["pred_row"]))
    truth_of_pred = dict(zip(pairs["pred_row"], pairs["truth_row"]))

    def best_share(rows, other_label, mapping) -> float:
        labels = [other_label[mapping[r]] for r in rows if r in mapping and other_label[mapping[r]]]
        return pd.Series(labels).value_counts().max() / len(rows) if labels else 0.0

    recalled = sum(best_share(rows, pred_seq, pred_of_truth) >= share for rows in observable.values())
    correct = sum(best_share(rows, true_seq, truth_of_pred) >= share for rows in pred_groups.values())
    return {"n_predicted": len(pred_groups), "n_truth": len(observable),
            "n_truth_unobservable": len(true_groups) - len(observable), "n_recalled": int(recalled),
            "n_correct": int(correct), "precision": _ratio(correct, len(pred_groups)),
            "recall": _ratio(recalled, len(observable)), "share": share, "min_maps": min_maps}


def tracking_scores(predicted: pd.DataFrame, truth: pd.DataFrame, *, pairs: pd.DataFrame | None = None,
                    min_iou: float = DEFAULT_MIN_IOU, max_center_km: float = DEFAULT_MAX_CENTER_KM,
                    sequence_share: float = DEFAULT_SEQUENCE_SHARE,
                    min_sequence_maps: int = DEFAULT_MIN_SEQUENCE_MAPS) -> dict:
    """Score a member/sequence assignment against a catalog's (definitions in the module docstring).

    Parameters
    ----------
    predicted, truth : DataFrame
        Storm tables with ``map_id, lon, lat, member_id`` (``sequence_id``, ``polygon_wkt``
        used when present). An empty ``member_id`` is a member of its own.
    pairs : DataFrame, optional
        Instance matches (:func:`match_instances` output); computed when not given.
    min_iou, max_center_km : float
        Matching thresholds (IoU; km).
    sequence_share : float
        Share of a sequence's instances another sequence must hold to recall it / to be correct.
    min_sequence_maps : int
        Distinct maps a true sequence must cover in the truth table to be scored.

    Returns
    -------
    dict
        ``instances`` (counts and the matching rule), ``links`` (precision, recall, f1),
        ``members`` (purity, completeness, n_merged, n_split), ``identity`` (idf1, idp, idr) and
        ``sequences`` (precision, recall and counts).
    """
    for name, table in (("predicted", predicted), ("truth", truth)):
        missing = [c for c in ("map_id", "lon", "lat") if c not in table.columns]
        if missing:
            raise ValueError(f"{name} table lacks columns {missing}")
    predicted = predicted.reset_index(drop=True)
    truth = truth.reset_index(drop=True)
    if pairs is None:
        pairs = match_instances(predicted, truth, min_iou=min_iou, max_center_km=max_center_km)
    pred_member, truth_member = _ids(predicted, "member_id", "_pred_row"), _ids(truth, "member_id", "_truth_row")
    truth_rows = pairs["truth_row"].to_numpy(dtype=int)
    matched = pd.DataFrame({
        "pred_member": pred_member[pairs["pred_row"].to_numpy(dtype=int)],
        "truth_member": truth_member[truth_rows],
        "map_id": pairs["map_id"].astype(str).to_numpy(),
    })
    truth_sequence = _ids(truth, "sequence_id", "_no_sequence")
    member_or_sequence = np.where(np.char.startswith(truth_sequence.astype(str), "_no_sequence"), truth_member,
                                  truth_sequence)
    rules = sorted(set(pairs["rule"])) if len(pairs) else []
    return {
        "instances": {"n_predicted": len(predicted), "n_truth": len(truth), "n_matched": len(pairs),
                      "match_rule": "+".join(rules) or "none", "min_iou": min_iou, "max_center_km": max_center_km},
        "links": _link_scores(matched),
        "sequence_links": _link_scores(matched.assign(truth_member=member_or_sequence[truth_rows])),
        "members": _member_scores(matched, len(set(pred_member)), len(set(truth_member))),
        "identity": _identity_scores(matched, len(predicted), len(truth)),
        "sequences": _sequence_scores(predicted, truth, pairs, sequence_share, min_sequence_maps),
    }


def format_scores(scores: dict) -> str:
    """A few lines of text summarizing :func:`tracking_scores` (percentages; ``n/a`` when undefined)."""
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}%"

    inst, links, members = scores["instances"], scores["links"], scores["members"]
    ident, seq = scores["identity"], scores["sequences"]
    return "\n".join([
        f"instances: {inst['n_predicted']} tracked, {inst['n_truth']} in the catalog, {inst['n_matched']} matched "
        f"({inst['match_rule']})",
        f"links:     precision {pct(links['precision'])}  recall {pct(links['recall'])}  F1 {pct(links['f1'])}  "
        f"({links['correct']} of {links['predicted']} predicted, {links['true']} true)",
        f"links, catalogued sequences as one member: precision {pct(scores['sequence_links']['precision'])}  "
        f"recall {pct(scores['sequence_links']['recall'])}  F1 {pct(scores['sequence_links']['f1'])}",
        f"members:   purity {pct(members['purity'])}  completeness {pct(members['completeness'])}  "
        f"({members['n_predicted']} tracked, {members['n_truth']} catalogued; {members['n_merged']} merged, "
        f"{members['n_split']} split)",
        f"identity:  IDF1 {pct(ident['idf1'])}  IDP {pct(ident['idp'])}  IDR {pct(ident['idr'])}",
        f"sequences: precision {pct(seq['precision'])}  recall {pct(seq['recall'])}  ({seq['n_recalled']} of "
        f"{seq['n_truth']} catalogued recalled, {seq['n_correct']} of {seq['n_predicted']} tracked correct; "
        f"{seq['n_truth_unobservable']} catalogued on < {seq['min_maps']} maps not scored)",
    ])


def catalog_for(instances: pd.DataFrame, truth: pd.DataFrame, map_ids=None) -> pd.DataFrame:
    """The truth rows a tracked or detected table can be held against.

    Parameters
    ----------
    instances : DataFrame
        The tracked table (``map_id, mars_year, ls``).
    truth : DataFrame
        The catalog.
    map_ids : iterable of str, optional
        The maps the instances were made on (e.g. ``maps.csv`` of ``marsdust detect``): the truth
        is restricted to them. Without it, the truth is restricted to the time span (Mars year and
        Ls) from the first to the last map of ``instances``, both included: maps in that span
        where nothing was found then count as misses; an empty ``instances`` keeps no truth.

    Returns
    -------
    DataFrame
        The kept truth rows, index reset.
    """
    if map_ids is not None:
        keep = truth["map_id"].astype(str).isin({str(m) for m in map_ids})
    elif len(instances) == 0:
        keep = pd.Series(False, index=truth.index)
    else:
        time = instances["mars_year"].astype(float) * 360.0 + instances["ls"].astype(float)
        truth_time = truth["mars_year"].astype(float) * 360.0 + truth["ls"].astype(float)
        keep = truth_time.between(time.min() - 1e-6, time.max() + 1e-6)
    return truth.loc[keep].reset_index(drop=True)
