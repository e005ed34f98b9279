"""Registration-based annotation consistency (echojax.consistency)."""

import numpy as np
import pytest

from echojax import consistency, phantoms


def _phantom(index, style="unity_like", size=64):
    r = phantoms.render_view(style, index, "4CH", "ED", shape=(size, size))
    return r.image.astype(np.float32), r.classes.astype(np.uint8)


def test_ncc_matrix_hand_values():
    a = np.array([[[0, 1], [2, 3]]], np.float64)
    b = np.stack([a[0], 2 * a[0] + 5, -a[0], np.array([[1, 0], [0, 1]], np.float64)])
    got = consistency.ncc_matrix(a, b)
    # centred a: [-1.5, -0.5, 0.5, 1.5]; centred identity pattern: [.5, -.5, -.5, .5] -> 0
    np.testing.assert_allclose(got, [[1.0, 1.0, -1.0, 0.0]], atol=1e-12)


def test_ncc_matrix_rejects_mismatched_sizes():
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        consistency.ncc_matrix(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


def test_select_pairs_is_greedy_and_uses_each_image_once():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 8, 8))
    target = base + 0.01 * rng.normal(size=base.shape)   # target k matches source k
    source = base[[2, 0, 1]]                              # source 0 is base 2, ...
    pairs = consistency.select_pairs(source, target, 3)
    assert sorted((p.source, p.target) for p in pairs) == [(0, 2), (1, 0), (2, 1)]
    assert all(p.similarity > 0.99 for p in pairs)
    with pytest.raises(ValueError, match="only 3 pairs"):
        consistency.select_pairs(source, target, 4)


def test_within_pairs_never_pair_an_image_with_itself_or_repeat_a_pair():
    rng = np.random.default_rng(1)
    stack = rng.normal(size=(6, 8, 8))
    pairs = consistency.select_pairs(stack, stack, 3, exclude_same_index=True)
    assert all(p.source != p.target for p in pairs)
    keys = {frozenset((p.source, p.target)) for p in pairs}
    assert len(keys) == 3


def test_registration_recovers_a_known_shift_of_the_same_frame():
    image, labels = _phantom(3)
    shift = (3, -4)  # rows, columns
    moved_image = np.roll(image, shift, axis=(0, 1))
    moved_labels = np.roll(labels, shift, axis=(0, 1))
    pair = consistency.Pair(source=0, target=0, similarity=1.0)
    res = consistency.score_pair(pair, moved_image[None], moved_labels[None],
                                 image[None], labels[None])
    fg = list(consistency.labels_lib.FOREGROUND_CLASSES)
    assert np.all(res.dice_after[fg] > 0.9), res.dice_after
    assert res.dice_after[fg].mean() > res.dice_before[fg].mean() + 0.15
    assert res.warped_labels.dtype == np.uint8
    assert set(np.unique(res.warped_labels)) <= {0, 1, 2, 3}


def test_summarize_hand_values():
    def result(after):
        after = np.array([1.0, *after])
        return consistency.PairResult(consistency.Pair(0, 0, 1.0), after, after, None, None)

    s = consistency.summarize([result([0.8, 0.6, np.nan]), result([0.6, 0.8, 0.9])])
    assert s["lv"]["after_mean"] == pytest.approx(0.7)
    assert s["lv"]["after_std"] == pytest.approx(np.std([0.8, 0.6], ddof=1))
    assert s["la"]["n"] == 1 and np.isnan(s["la"]["after_std"])
    # foreground: per-pair mean over the scored structures, then over pairs
    assert s["foreground"]["after_mean"] == pytest.approx((0.7 + (0.6 + 0.8 + 0.9) / 3) / 2)
