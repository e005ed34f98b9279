"""Tests of echojax.losses: hand-computed values, equivalences, gradients, transforms,
label dropout."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from scipy import stats

from echojax import losses
from echojax.labels import LA, LVM

NAMES = ("cce", "acce", "marginal", "abce")
MASKED = ("acce", "marginal", "abce")

# Softmax probabilities of the hand-computed cases: logits = log(P) => softmax = P.
P = np.array([0.1, 0.2, 0.3, 0.4])
# Sigmoid probabilities for aBCE: logits = logit(Q) => sigmoid = Q (Q[0] unused).
Q = np.array([0.9, 0.8, 0.3, 0.6])

FULL = [True, True, True, True]
NO_LVM = [True, True, False, True]  # one class missing
LV_ONLY = [True, True, False, False]  # two missing
BG_ONLY = [True, False, False, False]  # all foreground missing


def _logits(probs, n_pixels):
    return jnp.tile(jnp.asarray(np.log(probs), jnp.float32), (1, 1, n_pixels, 1))


def _abce_logits(n_pixels):
    return _logits(Q / (1 - Q), n_pixels)  # log(q / (1 - q)) = logit(q)


def _ln(x):
    return -math.log(x)


# (loss, label_mask, labels of a 1x1xN image, expected per-pixel values) -- each value
# worked out by hand from P or Q.
HAND_CASES = [
    ("cce", FULL, [0, 2], [_ln(0.1), _ln(0.3)]),
    ("cce", BG_ONLY, [0, 0], [_ln(0.1), _ln(0.1)]),  # ignores the mask
    ("acce", FULL, [0, 3], [_ln(0.1), _ln(0.4)]),
    ("acce", NO_LVM, [0, 1], [_ln(0.1 / 0.7), _ln(0.2 / 0.7)]),
    ("acce", LV_ONLY, [0, 1], [_ln(0.1 / 0.3), _ln(0.2 / 0.3)]),
    ("acce", BG_ONLY, [0, 0], [0.0, 0.0]),
    ("marginal", FULL, [0, 3], [_ln(0.1), _ln(0.4)]),
    ("marginal", NO_LVM, [0, 1, 3], [_ln(0.1 + 0.3), _ln(0.2), _ln(0.4)]),
    ("marginal", LV_ONLY, [0, 1], [_ln(0.1 + 0.3 + 0.4), _ln(0.2)]),
    ("marginal", BG_ONLY, [0, 0], [0.0, 0.0]),
    ("abce", FULL, [0, 1, 2],
     [_ln(0.2) + _ln(0.7) + _ln(0.4), _ln(0.8) + _ln(0.7) + _ln(0.4),
      _ln(0.2) + _ln(0.3) + _ln(0.4)]),
    ("abce", NO_LVM, [0, 1], [_ln(0.2) + _ln(0.4), _ln(0.8) + _ln(0.4)]),
    ("abce", LV_ONLY, [0, 1], [_ln(0.2), _ln(0.8)]),
    ("abce", BG_ONLY, [0, 0], [0.0, 0.0]),
]


def test_masks_apply_per_example():
    """Two examples in one batch, each with its own label mask."""
    logits = jnp.concatenate([_logits(P, 2)] * 2)
    y = jnp.asarray([[[0, 1]], [[0, 1]]], jnp.int32)
    m = jnp.asarray([FULL, LV_ONLY])
    expected = np.mean([_ln(0.1), _ln(0.2), _ln(0.1 / 0.3), _ln(0.2 / 0.3)])
    np.testing.assert_allclose(losses.LOSSES["acce"](logits, y, m), expected, rtol=1e-6)


def _random_batch(seed, b=2, h=3, w=5, c=4, scale=3.0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    logits = scale * jax.random.normal(k1, (b, h, w, c))
    labels = jax.random.randint(k2, (b, h, w), 0, c)
    return logits, labels


def _partial(labels, label_mask):
    """Labels made consistent with label_mask: unannotated classes become 0."""
    ok = jnp.take_along_axis(label_mask[:, None, None, :], labels[..., None], -1)[..., 0]
    return jnp.where(ok, labels, 0)


def test_fully_annotated_acce_and_marginal_equal_cce():
    logits, labels = _random_batch(0, b=3)
    full = jnp.ones((3, 4), bool)
    cce = losses.LOSSES["cce"].per_pixel(logits, labels, full)
    for name in ("acce", "marginal"):
        np.testing.assert_array_equal(losses.LOSSES[name].per_pixel(logits, labels, full), cce)
        assert losses.LOSSES[name](logits, labels, full) == losses.LOSSES["cce"](logits, labels, full)


@pytest.mark.parametrize("mask", [NO_LVM, LV_ONLY, BG_ONLY, [True, False, True, False]])
def test_marginal_background_pixels_sum_probabilities_float64(mask):
    # Background logits low and absent-class logits high: summing logits instead of
    # probabilities, or dropping a class from the sum, gives a very different value.
    rng = np.random.default_rng(1)
    z = rng.normal(size=(1, 2, 3, 4)) * 2.0
    z[..., 0] -= 6.0
    labels = np.zeros((1, 2, 3), np.int32)
    got = losses.LOSSES["marginal"].per_pixel(jnp.asarray(z, jnp.float32), labels,
                                              jnp.asarray([mask]))
    z64 = z.astype(np.float64)
    p = np.exp(z64 - z64.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    merged = np.array([True] + [not a for a in mask[1:]])
    expected = -np.log(p[..., merged].sum(-1))
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6)


def _partial_batch(seed, scale):
    logits, labels = _random_batch(seed, b=4, scale=1.0)
    logits = scale * jnp.sign(logits)  # every logit is +-scale
    label_mask = jnp.asarray([FULL, NO_LVM, LV_ONLY, BG_ONLY])
    return logits, _partial(labels, label_mask), label_mask


@pytest.mark.parametrize("name", NAMES)
def test_finite_values_and_gradients_at_1e4(name):
    logits, labels, label_mask = _partial_batch(2, 1e4)
    loss = losses.LOSSES[name]
    value, grad = jax.value_and_grad(loss)(logits, labels, label_mask)
    assert np.isfinite(value)
    assert np.all(np.isfinite(grad))
    assert np.any(grad != 0)


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager_vmap_and_no_retracing(name):
    loss = losses.LOSSES[name]
    traces = []

    def step(logits, labels, label_mask):
        traces.append(1)
        return loss(logits, labels, label_mask), loss.predict(logits)

    jitted = jax.jit(step)
    for seed in range(3):
        logits, labels, label_mask = _partial_batch(seed, 2.0)
        logits = logits + jax.random.normal(jax.random.key(seed), logits.shape)
        value, pred = jitted(logits, labels, label_mask)
        np.testing.assert_allclose(value, loss(logits, labels, label_mask), rtol=1e-6)
        np.testing.assert_array_equal(pred, loss.predict(logits))
    assert len(traces) == 1

    # vmap over a leading axis of three batches.
    batches = [_partial_batch(s, 2.0) for s in range(3)]
    stacked = [jnp.stack(x) for x in zip(*batches)]
    np.testing.assert_allclose(jax.vmap(loss)(*stacked), [loss(*b) for b in batches], rtol=1e-6)
    np.testing.assert_array_equal(jax.vmap(loss.predict)(stacked[0]),
                                  jnp.stack([loss.predict(b[0]) for b in batches]))


def test_predict_rules():
    z = jnp.asarray([[[[100.0, -1.0, -2.0, -3.0],
                       [-100.0, 0.5, 2.0, -1.0],
                       [5.0, 0.0, 0.0, 0.0],
                       [1.0, 3.0, 2.0, 0.0],
                       [-5.0, -1.0, -2.0, -3.0]]]])
    # aBCE: background unless a structure's sigmoid exceeds 0.5 (channel 0 ignored).
    abce = losses.LOSSES["abce"].predict(z)
    assert abce.dtype == jnp.int32
    np.testing.assert_array_equal(abce, [[[0, 2, 0, 1, 0]]])
    for name in ("cce", "acce", "marginal"):
        pred = losses.LOSSES[name].predict(z)
        assert pred.dtype == jnp.int32
        np.testing.assert_array_equal(pred, [[[0, 2, 0, 1, 1]]])


def test_argmax_predict_differs_from_abce_rule():
    z = jnp.asarray([[[[100.0, -1.0, 3.0, -3.0]]]])
    assert int(losses.LOSSES["cce"].predict(z)[0, 0, 0]) == 0
    assert int(losses.LOSSES["abce"].predict(z)[0, 0, 0]) == LVM


def test_registry():
    assert tuple(losses.LOSSES) == NAMES
    for name, loss in losses.LOSSES.items():
        assert loss.name == name
        hash(loss)  # usable as a static jit argument
    with pytest.raises(TypeError):
        losses.LOSSES["new"] = losses.CCE


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("logits_shape,labels_shape,mask_shape,mask_dtype,match", [
    ((2, 3, 5), (2, 3), (2, 4), bool, r"logits must be f32\[B, H, W, C\].*\(2, 3, 5\)"),
    ((2, 3, 5, 4), (2, 3, 4), (2, 4), bool, r"labels .*\[2, 3, 5\].*\[2, 3, 4\]"),
    ((2, 3, 5, 4), (2, 3, 5), (2, 3), bool, r"label_mask .*\[2, 4\].*\[2, 3\]"),
    ((2, 3, 5, 4), (2, 3, 5), (2, 4), np.int32, "label_mask must be bool"),
    ((2, 3, 5, 1), (2, 3, 5), (2, 1), bool, "at least 2 classes"),
])
def test_bad_shapes_raise(name, logits_shape, labels_shape, mask_shape, mask_dtype, match):
    with pytest.raises(ValueError, match=match):
        losses.LOSSES[name](jnp.zeros(logits_shape), jnp.zeros(labels_shape, jnp.int32),
                            jnp.ones(mask_shape, mask_dtype))


def test_bad_dtypes_raise():
    with pytest.raises(ValueError, match="labels must be an integer"):
        losses.CCE(jnp.zeros((1, 2, 2, 4)), jnp.zeros((1, 2, 2)), jnp.ones((1, 4), bool))
    with pytest.raises(ValueError, match="logits must be floating"):
        losses.CCE(jnp.zeros((1, 2, 2, 4), jnp.int32), jnp.zeros((1, 2, 2), jnp.int32),
                   jnp.ones((1, 4), bool))
    with pytest.raises(ValueError, match=r"logits must be.*\(1, 2, 4\)"):
        losses.ABCE.predict(jnp.zeros((1, 2, 4)))


# ---------------------------------------------------------------- label dropout

def _full_batch(b, h=4, w=4):
    """Every class present in every example (columns cycle 0, 1, 2, 3)."""
    labels = jnp.broadcast_to(jnp.arange(w, dtype=jnp.int32) % 4, (b, h, w))
    return labels, jnp.ones((b, 4), bool)


def test_label_dropout_rate_0_is_identity():
    labels, mask = _full_batch(16)
    mask = mask.at[::3, LA].set(False)
    labels = _partial(labels, mask)
    out_labels, out_mask = losses.label_dropout(
        jax.random.key(0), labels, mask, rate=0.0, classes=("lv", "lvm", "la"))
    np.testing.assert_array_equal(out_labels, labels)
    np.testing.assert_array_equal(out_mask, mask)
    assert out_labels.dtype == labels.dtype and out_mask.dtype == mask.dtype


def test_label_dropout_rate_1_drops_every_listed_annotated_class_only():
    labels, mask = _full_batch(8)
    mask = mask.at[::2, LVM].set(False)
    labels = _partial(labels, mask)
    out_labels, out_mask = losses.label_dropout(
        jax.random.key(1), labels, mask, rate=1.0, classes=("lvm", LA))
    expected_mask = np.asarray(mask).copy()
    expected_mask[:, [LVM, LA]] = False
    np.testing.assert_array_equal(out_mask, expected_mask)
    expected_labels = np.where(np.isin(labels, [LVM, LA]), 0, labels)
    np.testing.assert_array_equal(out_labels, expected_labels)


def test_label_dropout_never_changes_unlisted_classes():
    labels, mask = _full_batch(64)
    out_labels, out_mask = losses.label_dropout(
        jax.random.key(2), labels, mask, rate=0.5, classes="la")
    out_labels, out_mask, labels = map(np.asarray, (out_labels, out_mask, labels))
    np.testing.assert_array_equal(out_mask[:, :LA], True)
    keep = labels != LA
    np.testing.assert_array_equal(out_labels[keep], labels[keep])
    # LA pixels are all kept or all dropped, together with the mask entry.
    for b in range(64):
        la = labels[b] == LA
        assert np.all(out_labels[b][la] == (LA if out_mask[b, LA] else 0))
    assert 0 < out_mask[:, LA].sum() < 64


def test_label_dropout_frequency_within_binomial_interval():
    n = 4000
    labels, mask = _full_batch(n, h=1, w=4)
    _, out_mask = jax.jit(losses.label_dropout, static_argnames="classes")(
        jax.random.key(3), labels, mask, rate=0.3, classes=("lvm", "la"))
    lo, hi = stats.binom.interval(0.999, n, 0.3)
    for c in (LVM, LA):
        dropped = int(n - np.asarray(out_mask)[:, c].sum())
        assert lo <= dropped <= hi, (c, dropped, lo, hi)
    # Draws are independent between classes: both dropped about 0.09 of the time.
    both = int(np.sum(~np.asarray(out_mask)[:, LVM] & ~np.asarray(out_mask)[:, LA]))
    lo, hi = stats.binom.interval(0.999, n, 0.09)
    assert lo <= both <= hi


def test_label_dropout_traced_rate_does_not_retrace():
    labels, mask = _full_batch(256, h=1, w=4)
    traces = []

    @jax.jit
    def drop(rng, rate):
        traces.append(1)
        return losses.label_dropout(rng, labels, mask, rate=rate, classes=("lvm",))[1]

    kept = [int(drop(jax.random.key(4), jnp.float32(r))[:, LVM].sum()) for r in (0.0, 0.5, 1.0)]
    assert len(traces) == 1
    assert kept[0] == 256 and kept[2] == 0 and 0 < kept[1] < 256


def test_label_dropout_under_vmap():
    labels, mask = _full_batch(6)
    keys = jax.random.split(jax.random.key(5), 3)
    stacked = (jnp.stack([labels] * 3), jnp.stack([mask] * 3))
    out_labels, out_mask = jax.vmap(
        lambda k, y, m: losses.label_dropout(k, y, m, rate=0.5, classes=("lv",)))(keys, *stacked)
    for i in range(3):
        ref = losses.label_dropout(keys[i], labels, mask, rate=0.5, classes=("lv",))
        np.testing.assert_array_equal(out_labels[i], ref[0])
        np.testing.assert_array_equal(out_mask[i], ref[1])


@pytest.mark.parametrize("kwargs,match", [
    (dict(rate=0.5, classes=("background",)), "background cannot be dropped"),
    (dict(rate=0.5, classes=("rv",)), "unknown class name 'rv'"),
    (dict(rate=1.5, classes=("lv",)), r"rate must be in \[0, 1\], got 1.5"),
    (dict(rate=-0.1, classes=("lv",)), r"rate must be in \[0, 1\]"),
])
def test_label_dropout_bad_arguments(kwargs, match):
    labels, mask = _full_batch(2)
    with pytest.raises(ValueError, match=match):
        losses.label_dropout(jax.random.key(0), labels, mask, **kwargs)


def test_label_dropout_bad_shapes():
    labels, mask = _full_batch(2)
    with pytest.raises(ValueError, match=r"B=2.*\[3, 4, 4\]"):
        losses.label_dropout(jax.random.key(0), jnp.zeros((3, 4, 4), jnp.int32), mask,
                             rate=0.5, classes=("lv",))
    with pytest.raises(ValueError, match="label_mask must be bool"):
        losses.label_dropout(jax.random.key(0), labels, mask.astype(jnp.int32),
                             rate=0.5, classes=("lv",))
    with pytest.raises(ValueError, match="outside label_mask's 3 classes"):
        losses.label_dropout(jax.random.key(0), labels, mask[:, :3], rate=0.5, classes=("la",))
    with pytest.raises(ValueError, match="labels must be an integer"):
        losses.label_dropout(jax.random.key(0), labels.astype(float), mask,
                             rate=0.5, classes=("lv",))


# --- The same properties with and without jit (chex.variants) ----------------------------


class LossVariantsTest(chex.TestCase):
    """Hand-computed values, exactly-zero gradients and the NaN contract hold for the
    eager loss and for the jitted one alike (``self.variant`` wraps the function)."""

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.named_parameters(
        (f"{name}_{i}", name, mask, labels, expected)
        for i, (name, mask, labels, expected) in enumerate(HAND_CASES))
    def test_hand_computed_values(self, name, mask, labels, expected):
        n = len(labels)
        logits = _abce_logits(n) if name == "abce" else _logits(P, n)
        y = jnp.asarray([[labels]], jnp.int32)
        m = jnp.asarray([mask])
        loss = losses.LOSSES[name]
        per_pixel = self.variant(loss.per_pixel)(logits, y, m)
        chex.assert_shape(per_pixel, (1, 1, n))
        np.testing.assert_allclose(per_pixel[0, 0], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(self.variant(loss)(logits, y, m), np.mean(expected),
                                   rtol=1e-5, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(2.0, 1e4)
    def test_acce_gradient_exactly_zero_for_absent_classes(self, scale):
        logits, labels, label_mask = _partial_batch(3, 1.0)
        logits = scale * (logits + jax.random.normal(jax.random.key(3), logits.shape))
        # An absent class with the largest logit would overflow a naive masked softmax.
        logits = logits.at[3, ..., LVM].set(3 * scale)
        grad = np.asarray(self.variant(jax.grad(losses.LOSSES["acce"]))(logits, labels, label_mask))
        absent = ~np.asarray(label_mask)[:, None, None, :] & np.ones(grad.shape, bool)
        assert np.all(np.isfinite(grad))
        assert np.all(grad[absent] == 0.0)
        if scale < 10:  # (at 1e4 the softmax saturates and true gradients underflow to 0)
            # Examples 0-2 have >= 2 annotated classes: all of those get gradient.
            assert np.all(grad[:3][~absent[:3]] != 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(2.0, 1e4)
    def test_abce_gradient_exactly_zero_for_channel_0_and_absent_classes(self, scale):
        logits, labels, label_mask = _partial_batch(4, 1.0)
        logits = scale * (logits + jax.random.normal(jax.random.key(4), logits.shape))
        grad = np.asarray(self.variant(jax.grad(losses.LOSSES["abce"]))(logits, labels, label_mask))
        assert np.all(np.isfinite(grad))
        assert np.all(grad[..., 0] == 0.0)
        absent = ~np.asarray(label_mask)[:, None, None, :] & np.ones(grad.shape, bool)
        assert np.all(grad[absent] == 0.0)
        if scale < 10:
            trained = ~absent
            trained[..., 0] = False
            assert np.all(grad[trained] != 0.0)

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*MASKED)
    def test_labels_of_unannotated_classes_give_nan(self, name):
        logits, _ = _random_batch(5, b=1)
        labels = jnp.full((1, 3, 5), LA, jnp.int32)
        per_pixel = self.variant(losses.LOSSES[name].per_pixel)
        assert np.all(np.isfinite(per_pixel(logits, labels, jnp.asarray([NO_LVM]))))
        assert np.all(np.isnan(per_pixel(logits, labels, jnp.asarray([LV_ONLY]))))
