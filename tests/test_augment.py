"""Tests of echojax.augment: exact identities, hand-computed cases, properties."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from echojax.augment import AugmentConfig, augment_batch
from echojax.config import from_jsonable, to_jsonable

NONE = AugmentConfig.none()
# Jitted once per (config, shape): faster than op-by-op dispatch on 2 cores.
augment = jax.jit(augment_batch, static_argnames="cfg")


def _data(b=3, h=12, w=12, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 1, (b, h, w, 1)).astype(np.float32)
    labels = rng.choice(np.array([0, 1, 3]), size=(b, h, w)).astype(np.int32)
    return images, labels


def _only(**kwargs):
    return dataclasses.replace(NONE, **kwargs)


def test_identity_when_all_probabilities_are_zero():
    images, labels = _data()
    out_i, out_l = augment(jax.random.key(0), images, labels, NONE)
    np.testing.assert_array_equal(np.asarray(out_i), images)
    np.testing.assert_array_equal(np.asarray(out_l), labels)
    assert out_l.dtype == jnp.int32 and out_i.dtype == jnp.float32


def test_rotation_by_90_degrees_equals_rot90():
    images, labels = _data(h=9, w=9)
    cfg = _only(rotation_prob=1.0, rotation_degrees=(90.0, 90.0))
    out_i, out_l = augment(jax.random.key(1), images, labels, cfg)
    np.testing.assert_array_equal(np.asarray(out_l), np.rot90(labels, k=1, axes=(1, 2)))
    # Bilinear at (within float error of) integer points: the image turns too.
    np.testing.assert_allclose(np.asarray(out_i), np.rot90(images, k=1, axes=(1, 2)), atol=1e-5)


def test_scale_two_samples_the_centre_half_with_nearest_labels():
    _, labels = _data(b=1, h=9, w=9)
    cfg = _only(scale_prob=1.0, scale=(2.0, 2.0))
    _, out_l = augment(jax.random.key(2), labels[..., None].astype(np.float32), labels, cfg)
    # Output pixel p samples the input at c + (p - c) / 2, c = 4; ties round up.
    src = np.floor(4 + (np.arange(9) - 4) / 2 + 0.5).astype(int)
    np.testing.assert_array_equal(np.asarray(out_l)[0], labels[0][np.ix_(src, src)])


@pytest.mark.parametrize("scale, degrees", [(1.3, 23.0), (0.8, -37.0)])
def test_affine_matches_scipy_map_coordinates(scale, degrees):
    from scipy import ndimage
    images, labels = _data(b=2, h=11, w=11)
    cfg = _only(scale_prob=1.0, scale=(scale, scale), rotation_prob=1.0,
                rotation_degrees=(degrees, degrees))
    out_i, out_l = augment(jax.random.key(12), images, labels, cfg)
    # Output pixel p samples the input at c + M (p - c) / scale, M = [[cos, sin], [-sin, cos]].
    t = np.deg2rad(degrees)
    u, v = np.mgrid[0:11, 0:11] - 5.0
    coords = [5 + (np.cos(t) * u + np.sin(t) * v) / scale,
              5 + (-np.sin(t) * u + np.cos(t) * v) / scale]
    for k in range(2):
        want_i = ndimage.map_coordinates(images[k, ..., 0].astype(np.float64), coords, order=1,
                                         mode="grid-constant", cval=0.0)
        want_l = ndimage.map_coordinates(labels[k], coords, order=0, mode="grid-constant", cval=0)
        np.testing.assert_allclose(np.asarray(out_i)[k, ..., 0], want_i, atol=1e-5)
        np.testing.assert_array_equal(np.asarray(out_l)[k], want_l)


def test_zoom_out_fills_with_background_and_keeps_label_values():
    images, labels = _data(b=2, h=16, w=16)
    labels = np.where(labels == 0, 2, labels)  # no background in the input at all
    cfg = _only(scale_prob=1.0, scale=(0.5, 0.5))
    out_i, out_l = augment(jax.random.key(3), images, labels, cfg)
    out_l = np.asarray(out_l)
    assert (out_l[:, 0, :] == 0).all() and (out_l[:, :, -1] == 0).all()
    assert (np.asarray(out_i)[:, 0, :] == 0).all()
    assert set(np.unique(out_l)) <= {0, 1, 2, 3} and (out_l[:, 8, 8] != 0).all()


def test_labels_only_take_input_values_under_every_transform():
    images, labels = _data(b=8, h=16, w=16)
    labels = np.where(labels == 1, 3, labels)  # values {0, 3}
    cfg = AugmentConfig(scale_prob=1.0, rotation_prob=1.0, blur_prob=1.0,
                        brightness_prob=1.0, contrast_prob=1.0, rotation_degrees=(-40, 40))
    _, out_l = augment(jax.random.key(4), images, labels, cfg)
    assert set(np.unique(np.asarray(out_l))) <= {0, 3}


def test_blur_keeps_a_constant_image_and_matches_a_hand_computed_kernel():
    cfg = _only(blur_prob=1.0, blur_sigma=(1.0, 1.0))
    const = np.full((2, 10, 10, 1), 0.7, np.float32)
    labels = np.zeros((2, 10, 10), np.int32)
    out, out_l = augment(jax.random.key(5), const, labels, cfg)
    np.testing.assert_allclose(np.asarray(out), const, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out_l), labels)

    impulse = np.zeros((1, 11, 11, 1), np.float32)
    impulse[0, 5, 5, 0] = 1.0
    out, _ = augment(jax.random.key(6), impulse, np.zeros((1, 11, 11), np.int32), cfg)
    k = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    k /= k.sum()
    expected = np.zeros((11, 11))
    expected[2:9, 2:9] = np.outer(k, k)
    np.testing.assert_allclose(np.asarray(out)[0, ..., 0], expected, atol=1e-7)


def test_brightness_and_contrast_follow_their_formulas():
    images, labels = _data(b=2)
    out, _ = augment(jax.random.key(7), images, labels,
                           _only(brightness_prob=1.0, brightness=(2.0, 2.0),
                                 brightness_shift=(0.1, 0.1)))
    np.testing.assert_allclose(np.asarray(out), images * 2.0 + 0.1, rtol=1e-6)

    out, _ = augment(jax.random.key(8), images, labels,
                           _only(contrast_prob=1.0, contrast=(1.5, 1.5)))
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    lo, hi = images.min(axis=(1, 2, 3), keepdims=True), images.max(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(np.asarray(out), np.clip((images - mean) * 1.5 + mean, lo, hi),
                               rtol=1e-5, atol=1e-6)


def test_examples_are_augmented_independently():
    images, labels = _data(b=1)
    images, labels = images.repeat(6, 0), labels.repeat(6, 0)
    cfg = _only(rotation_prob=1.0, rotation_degrees=(-30.0, 30.0))
    out, _ = augment(jax.random.key(9), images, labels, cfg)
    out = np.asarray(out)
    assert len({out[i].tobytes() for i in range(6)}) == 6


def test_probability_selects_a_subset_of_examples():
    images, labels = _data(b=64, h=8, w=8)
    out, _ = augment(jax.random.key(10), images, labels,
                           _only(brightness_prob=0.5, brightness=(2.0, 2.0)))
    changed = ~np.all(np.asarray(out) == images, axis=(1, 2, 3))
    assert 16 <= changed.sum() <= 48
    np.testing.assert_allclose(np.asarray(out)[changed], images[changed] * 2.0, rtol=1e-6)


def test_jit_equals_eager_and_compiles_once():
    cfg = AugmentConfig(scale_prob=1.0, rotation_prob=1.0, blur_prob=1.0,
                        brightness_prob=1.0, contrast_prob=1.0)
    traces = []

    def fn(rng, images, labels):
        traces.append(1)
        return augment_batch(rng, images, labels, cfg)

    jitted = jax.jit(fn)
    images, labels = _data(b=4, h=16, w=16)
    ji, jl = jitted(jax.random.key(11), images, labels)
    ei, el = fn(jax.random.key(11), images, labels)
    np.testing.assert_allclose(np.asarray(ji), np.asarray(ei), atol=1e-5)
    np.testing.assert_array_equal(np.asarray(jl), np.asarray(el))
    images2, labels2 = _data(b=4, h=16, w=16, seed=1)
    jitted(jax.random.key(12), images2, labels2)
    assert len(traces) == 2  # one trace under jit, one eager call


@pytest.mark.parametrize("bad", [
    dict(scale_prob=1.5), dict(blur_prob=-0.1), dict(scale=(1.4, 0.7)),
    dict(scale=(0.0, 1.0)), dict(blur_sigma=(0.0, 1.0)), dict(contrast=(1.0,)),
    dict(brightness=(-1.0, 1.0)), dict(rotation_prob=True),
])
def test_bad_config_raises(bad):
    with pytest.raises(ValueError, match="AugmentConfig"):
        AugmentConfig(**bad)


def test_config_json_round_trip_and_static_hashing():
    cfg = AugmentConfig(rotation_degrees=(-10, 20))
    back = from_jsonable(AugmentConfig, json.loads(json.dumps(to_jsonable(cfg))), "augment")
    assert back == cfg and hash(back) == hash(cfg)
    assert back.rotation_degrees == (-10.0, 20.0)
    with pytest.raises(ValueError, match="unknown keys"):
        from_jsonable(AugmentConfig, {"scale_probability": 0.1}, "augment")


def test_bad_shapes_raise():
    images, labels = _data()
    with pytest.raises(ValueError, match="augment_batch"):
        augment_batch(jax.random.key(0), images[..., 0], labels, NONE)
