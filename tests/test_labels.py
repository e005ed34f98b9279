"""Tests of echojax.labels: ids, names and label masks."""

import numpy as np
import pytest

from echojax import labels


def test_ids_match_camus():
    assert (labels.BACKGROUND, labels.LV, labels.LVM, labels.LA) == (0, 1, 2, 3)
    assert labels.NUM_CLASSES == len(labels.CLASS_NAMES) == 4
    assert labels.FOREGROUND_CLASSES == (1, 2, 3)
    for i, name in enumerate(labels.CLASS_NAMES):
        assert labels.class_id(name) == i


@pytest.mark.parametrize("name,expected", [
    ("LV", 1), (" lvm ", 2), ("Myocardium", 2), ("left_atrium", 3), ("bg", 0),
    (3, 3), (np.int64(2), 2),
])
def test_class_id_accepts_names_aliases_and_ids(name, expected):
    assert labels.class_id(name) == expected


@pytest.mark.parametrize("bad,match", [
    ("rv", "unknown class name 'rv'"), (4, "outside 0..3"), (-1, "outside 0..3"),
    (True, "name or an int id"), (1.0, "name or an int id"),
])
def test_class_id_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        labels.class_id(bad)


def test_class_ids_sorted_unique_and_string_forms():
    assert labels.class_ids(["la", "lv", 1, "LV"]) == (1, 3)
    assert labels.class_ids("lvm,la") == (2, 3)
    assert labels.class_ids("lvm") == (2,)  # not split into characters
    assert labels.class_ids([]) == ()


def test_label_mask_round_trip():
    mask = labels.label_mask_from_names(["lvm", "la"])
    assert mask.dtype == bool and mask.tolist() == [True, False, True, True]
    assert labels.names_from_label_mask(mask) == ("lvm", "la")
    assert labels.label_mask_from_names([]).tolist() == [True, False, False, False]
    assert labels.FULL_LABEL_MASK.tolist() == [True] * 4
    assert labels.LV_ONLY_LABEL_MASK.tolist() == [True, True, False, False]
    assert labels.names_from_label_mask(labels.FULL_LABEL_MASK) == ("lv", "lvm", "la")


@pytest.mark.parametrize("bad", [np.ones(3, bool), np.ones(4, np.int32), np.ones((1, 4), bool)])
def test_names_from_label_mask_rejects_bad_masks(bad):
    with pytest.raises(ValueError, match=r"label_mask must be bool\[4\]"):
        labels.names_from_label_mask(bad)
