"""marsdust.evaluate.inputs: how the fields of the per-map dicts are read."""

import numpy as np
import pytest
import torch

from marsdust.evaluate.inputs import as_array, check_map_keys, entry_boxes, entry_masks, entry_scores, map_ls_of


def test_fields_are_read_with_their_defaults():
    assert entry_boxes({}).shape == (0, 4)
    assert entry_boxes({"boxes": torch.tensor([1.0, 2, 3, 4])}).tolist() == [[1, 2, 3, 4]]
    assert entry_scores({}, 2).tolist() == [1.0, 1.0]  # no scores: every box scores 1
    with pytest.raises(ValueError, match="map r18_040: 2 predicted boxes but 1 scores"):
        entry_scores({"scores": [0.5]}, 2, "r18_040")
    assert entry_masks({}) is None and entry_masks({"masks": None}) is None
    probabilities = np.array([[[[0.2, 0.5], [0.7, 0.49]]]])  # (n, 1, H, W) probabilities
    assert entry_masks({"masks": probabilities}).tolist() == [[[0, 1], [1, 0]]]
    assert as_array(torch.ones(2), np.float64).dtype == np.float64


def test_maps_and_their_ls():
    assert check_map_keys({"b": {}, "a": {}}, {"a": {}}) == ["a", "b"]
    with pytest.raises(ValueError, match=r"predictions for 1 map\(s\) without ground truth entries, e.g. \['c'\]"):
        check_map_keys({"a": {}}, {"c": {}})
    assert map_ls_of("a", {"ls": 12.0}, {"a": 30.0}) == 30.0
    assert map_ls_of("a", {"ls": 12.0}, None) == 12.0
    assert np.isnan(map_ls_of("a", {}, {"b": 1.0}))
