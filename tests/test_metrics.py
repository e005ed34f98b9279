"""Tests of echojax.metrics: Dice known cases, numpy reference, jit, aggregation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echojax import metrics


def _reference_dice(pred, labels, num_classes):
    """Plain loops, one example and class at a time."""
    out = np.full((pred.shape[0], num_classes), np.nan)
    for b in range(pred.shape[0]):
        for c in range(num_classes):
            p, g = pred[b] == c, labels[b] == c
            if g.sum():
                out[b, c] = 2.0 * np.logical_and(p, g).sum() / (p.sum() + g.sum())
    return out


def test_perfect_overlap_is_one_and_disjoint_is_zero():
    labels = np.array([[[0, 1], [2, 3]]])
    np.testing.assert_array_equal(metrics.dice_per_class(labels, labels), [[1, 1, 1, 1]])
    disjoint = np.array([[[1, 2], [3, 0]]])
    np.testing.assert_array_equal(metrics.dice_per_class(disjoint, labels), [[0, 0, 0, 0]])


def test_empty_ground_truth_is_nan_whatever_was_predicted():
    labels = np.zeros((2, 2, 3), np.int32)
    labels[1, 0, 0] = 1
    pred = np.zeros((2, 2, 3), np.int32)
    pred[:, 1, :] = 3  # predicts LA that is not there
    dice = metrics.dice_per_class(pred, labels)
    assert dice.shape == (2, 4) and dice.dtype == np.float32
    assert np.isnan(dice[:, 2:]).all() and np.isnan(dice[0, 1])
    np.testing.assert_allclose(dice[:, 0], [2 * 3 / (3 + 6), 2 * 2 / (3 + 5)])
    assert dice[1, 1] == 0.0


def test_hand_computed_partial_overlap():
    pred = np.array([[1, 1, 1, 0, 0, 2]])
    labels = np.array([[1, 1, 0, 0, 2, 2]])
    # class 0: P={3,4} G={2,3} -> 2*1/4; class 1: P={0,1,2} G={0,1} -> 2*2/5;
    # class 2: P={5} G={4,5} -> 2*1/3.
    np.testing.assert_allclose(metrics.dice_per_class(pred, labels, num_classes=3),
                               [[0.5, 0.8, 2 / 3]], rtol=1e-6)


def test_agrees_with_numpy_reference_on_random_masks_numpy_and_jit():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(5, 16, 16))
    labels[0][labels[0] == 3] = 0  # an empty class
    pred = np.where(rng.random((5, 16, 16)) < 0.7, labels, rng.integers(0, 4, (5, 16, 16)))
    ref = _reference_dice(pred, labels, 4)
    got = metrics.dice_per_class(pred, labels)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    jitted = jax.jit(metrics.dice_per_class, static_argnames="num_classes")(
        jnp.asarray(pred), jnp.asarray(labels))
    assert isinstance(jitted, jax.Array) and jitted.dtype == jnp.float32
    np.testing.assert_allclose(jitted, ref, rtol=1e-6)


def test_aggregation_is_per_class_nanmean_then_class_mean():
    dice = np.array([[1.0, 0.5, np.nan, 0.2],
                     [1.0, 0.7, np.nan, np.nan],
                     [1.0, np.nan, np.nan, 0.6]], np.float32)
    np.testing.assert_allclose(metrics.nanmean_per_class(dice), [1.0, 0.6, np.nan, 0.4])
    # Foreground: LV 0.6, LVM absent everywhere (left out), LA 0.4 -> 0.5.
    np.testing.assert_allclose(metrics.foreground_dice(dice), 0.5)
    np.testing.assert_allclose(metrics.foreground_dice(dice, classes=(1,)), 0.6)
    assert np.isnan(metrics.foreground_dice(dice, classes=(2,)))
    np.testing.assert_allclose(jax.jit(metrics.foreground_dice)(jnp.asarray(dice)), 0.5)


@pytest.mark.parametrize("pred,labels,match", [
    (np.zeros((2, 4), int), np.zeros((2, 5), int), r"\[2, 4\] and \[2, 5\]"),
    (np.zeros((4,), int), np.zeros((4,), int), r"int\[B, \.\.\.\]"),
    (np.zeros((1, 4)), np.zeros((1, 4), int), "pred must be integer"),
    (np.zeros((1, 4), int), np.full((1, 4), 4), r"labels has ids in \[4, 4\], expected 0..3"),
    (np.full((1, 4), -1), np.zeros((1, 4), int), r"pred has ids in \[-1, -1\]"),
])
def test_bad_inputs_raise(pred, labels, match):
    with pytest.raises(ValueError, match=match):
        metrics.dice_per_class(pred, labels)


def test_bad_aggregation_inputs_raise():
    with pytest.raises(ValueError, match=r"f32\[N, C\]"):
        metrics.nanmean_per_class(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="subset of 0..3"):
        metrics.foreground_dice(np.zeros((2, 4), np.float32), classes=(4,))
