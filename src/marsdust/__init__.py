"""marsdust: deep-learning detection of Martian dust storms in Mars Daily Global Maps."""

__version__ = "0.1.0"
