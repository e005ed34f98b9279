"""echojax.ops against the lax / Flax layers they replace: forward values, gradients
(against a float64 reference) and parameter compatibility."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from echojax import ops
from echojax.ops import conv as conv_ops
from echojax.ops import winograd

NHWC = ("NHWC", "HWIO", "NHWC")


def _rand(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape)


def _ref_conv(x, k):
    return lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=NHWC)


def _ref_conv_transpose(x, k, b, padding):
    return lax.conv_transpose(x, k, (2, 2), padding, dimension_numbers=NHWC) + b


def _value_and_grads(f, args, cotangent):
    """``f(*args)`` and the gradient of ``sum(f(*args) * cotangent)`` wrt every arg."""
    out, vjp = jax.vjp(f, *args)
    return out, vjp(jnp.asarray(cotangent, out.dtype))


def _check_against_float64(op, ref, args, out_shape, *, rtol):
    """The op in float64 equals the reference to rounding; in float32 it is within
    ``rtol`` (relative to the largest entry) of the float64 reference."""
    ct = _rand(99, *out_shape)
    with jax.enable_x64(True):
        a64 = [jnp.asarray(a, jnp.float64) for a in args]
        want = _value_and_grads(ref, a64, ct)
        got64 = _value_and_grads(op, a64, ct)
        want = jax.tree.map(np.asarray, want)
        got64 = jax.tree.map(np.asarray, got64)
    got32 = jax.tree.map(np.asarray, _value_and_grads(op, [jnp.asarray(a, jnp.float32) for a in args], ct))
    for w, g64, g32 in zip(jax.tree.leaves(want), jax.tree.leaves(got64), jax.tree.leaves(got32)):
        scale = np.abs(w).max()
        assert g32.dtype == np.float32
        np.testing.assert_allclose(g64, w, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(g32, w, rtol=0, atol=rtol * scale)


# --- conv_transpose_2x2 ----------------------------------------------------------------

@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_conv_transpose_matches_lax_values_and_gradients(padding):
    x, k, b = _rand(0, 2, 3, 5, 4), _rand(1, 2, 2, 4, 6), _rand(2, 6)
    _check_against_float64(
        ops.conv_transpose_2x2, lambda x, k, b: _ref_conv_transpose(x, k, b, padding),
        [x, k, b], (2, 6, 10, 6), rtol=1e-5)


def test_conv_transpose_uses_flax_parameters_unchanged():
    layer = nnx.ConvTranspose(3, 5, kernel_size=(2, 2), strides=(2, 2), padding="VALID",
                              rngs=nnx.Rngs(0))
    layer.bias[...] = jnp.arange(5.0)
    x = jnp.asarray(_rand(3, 2, 4, 4, 3), jnp.float32)
    got = ops.conv_transpose_2x2(x, layer.kernel[...], layer.bias[...])
    np.testing.assert_allclose(got, layer(x), rtol=1e-6, atol=1e-6)


def test_conv_transpose_hand_computed():
    # One pixel with value 1 and one channel: the output patch is the kernel flipped in
    # both axes (lax.conv_transpose correlates without flipping).
    k = jnp.arange(4.0).reshape(2, 2, 1, 1)
    y = ops.conv_transpose_2x2(jnp.ones((1, 1, 1, 1)), k)
    np.testing.assert_array_equal(y[0, :, :, 0], [[3.0, 2.0], [1.0, 0.0]])


def test_conv_transpose_bad_shapes():
    with pytest.raises(ValueError, match=r"\[2, 2, C, O\]"):
        ops.conv_transpose_2x2(jnp.ones((1, 2, 2, 3)), jnp.ones((3, 3, 3, 4)))
    with pytest.raises(ValueError, match="channels"):
        ops.conv_transpose_2x2(jnp.ones((1, 2, 2, 3)), jnp.ones((2, 2, 5, 4)))


# --- k x k SAME convolutions -----------------------------------------------------------

CONVS = {
    "im2col": ops.conv_same_im2col,
    "winograd": lambda x, k: ops.conv_same(x, k, method="winograd"),
    "winograd4": lambda x, k: ops.conv_same(x, k, method="winograd4"),
    "xla": lambda x, k: ops.conv_same(x, k, method="xla"),
}


# Winograd is written for 3x3 kernels (the U-Net's).
CASES = [(m, 3, 4, 5) for m in sorted(CONVS)] + [
    (m, k, ci, co) for m in ("im2col", "xla") for k, ci, co in [(1, 3, 2), (5, 2, 3)]]


@pytest.mark.parametrize("method,ksize,cin,cout", CASES)
def test_conv_same_matches_lax_values_and_gradients(method, ksize, cin, cout):
    # Winograd F(2x2, 3x3) needs even H and W (whole 2x2 output tiles), F(4x4, 3x3)
    # multiples of 4.
    h, w = (8, 12) if method.endswith("winograd4") else (6, 6) if "winograd" in method else (6, 5)
    x, k = _rand(4, 2, h, w, cin), _rand(5, ksize, ksize, cin, cout)
    _check_against_float64(CONVS[method], _ref_conv, [x, k], (2, h, w, cout), rtol=1e-5)


@pytest.mark.parametrize("h,w,cin,cout", [(2, 2, 1, 1), (4, 8, 3, 2), (10, 6, 16, 8)])
def test_winograd_matches_lax_on_more_shapes(h, w, cin, cout):
    # Non-square maps (tile order along H vs W), a single tile (every input pixel
    # touches the zero padding) and wider channels (longer sums, float32 error).
    x, k = _rand(11, 3, h, w, cin), _rand(12, 3, 3, cin, cout)
    _check_against_float64(ops.conv_same_winograd, _ref_conv, [x, k], (3, h, w, cout), rtol=1e-5)


def test_winograd_hand_computed():
    # A single 1 in the middle of a 4x4 map: the output is the kernel rotated by 180
    # degrees around that pixel (correlation), zero elsewhere.
    x = jnp.zeros((1, 4, 4, 1)).at[0, 1, 2, 0].set(1.0)
    k = jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1)
    want = np.zeros((4, 4))
    want[0:3, 1:4] = np.arange(9.0, 0.0, -1.0).reshape(3, 3)
    np.testing.assert_allclose(ops.conv_same_winograd(x, k)[0, :, :, 0], want, atol=1e-6)


def test_winograd_bad_input():
    with pytest.raises(ValueError, match="even"):
        ops.conv_same_winograd(jnp.ones((1, 5, 4, 2)), jnp.ones((3, 3, 2, 3)))
    with pytest.raises(ValueError, match=r"\[3, 3, C, O\]"):
        ops.conv_same_winograd(jnp.ones((1, 4, 4, 2)), jnp.ones((5, 5, 2, 3)))
    with pytest.raises(ValueError, match="channels"):
        ops.conv_same_winograd(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 4, 3)))
    with pytest.raises(ValueError, match="even height and width"):
        ops.conv_same(jnp.ones((1, 4, 5, 2)), jnp.ones((3, 3, 2, 3)), method="winograd")


@pytest.mark.parametrize("points", [winograd.WINOGRAD4_POINTS, (0.0, 1.0, -1.0, 0.5, -0.5)])
@pytest.mark.parametrize("h,w,cin,cout", [(4, 4, 1, 1), (8, 4, 3, 2), (12, 8, 64, 16)])
def test_winograd4_matches_lax_on_more_shapes(points, h, w, cin, cout):
    # A single 4x4 tile (every input pixel touches the padding), non-square maps, and 64
    # input channels: F(4x4, 3x3)'s transform constants (up to 8 and 1/24) make its
    # float32 error several times XLA's; 2e-5 of the largest entry bounds it here
    # (measured 1e-6 to 1e-5 on U-Net layers, bench/README.md), 1e-12 in float64.
    x, k = _rand(17, 2, h, w, cin), _rand(18, 3, 3, cin, cout) / np.sqrt(9 * cin)
    _check_against_float64(winograd.make_winograd4(points), _ref_conv, [x, k], (2, h, w, cout), rtol=2e-5)


def test_cook_toom_matrices():
    # Lavin & Gray's F(4, 3) matrices for the points 0, +-1, +-2, and the defining
    # identity (1-D correlation) for another point set, on random data.
    at, g, bt = winograd.cook_toom((0, 1, -1, 2, -2))
    np.testing.assert_array_equal(bt[0], [4, 0, -5, 0, 1, 0])
    np.testing.assert_array_equal(bt[5], [0, 4, 0, -5, 0, 1])
    np.testing.assert_allclose(g[3], [1 / 24, 1 / 12, 1 / 6])
    np.testing.assert_array_equal(at[3], [0, 1, -1, 8, -8, 1])
    at, g, bt = winograd.cook_toom((0, 1, -1, 0.5, -0.5))
    d, f = _rand(19, 6), _rand(20, 3)
    np.testing.assert_allclose(at @ ((g @ f) * (bt @ d)), np.correlate(d, f, "valid"), atol=1e-12)
    with pytest.raises(ValueError, match="distinct"):
        winograd.cook_toom((0, 1, 1, 2, -2))
    with pytest.raises(ValueError, match="5 distinct"):
        winograd.cook_toom((0, 1, -1, 2))


def test_winograd4_bad_input():
    with pytest.raises(ValueError, match="multiples of 4"):
        winograd.conv_same_winograd4(jnp.ones((1, 6, 8, 2)), jnp.ones((3, 3, 2, 3)))
    with pytest.raises(ValueError, match=r"\[3, 3, C, O\]"):
        winograd.conv_same_winograd4(jnp.ones((1, 8, 8, 2)), jnp.ones((5, 5, 2, 3)))
    with pytest.raises(ValueError, match="multiples of 4"):
        ops.conv_same(jnp.ones((1, 8, 6, 2)), jnp.ones((3, 3, 2, 3)), method="winograd4")


@pytest.mark.parametrize("x_shape, k_shape, method", [
    # Up to 8x8 pixels: patches + matmul, whatever the kernel.
    ((1, 8, 8, 2), (3, 3, 2, 3), "im2col"),
    ((1, 4, 2, 2), (5, 5, 2, 3), "im2col"),
    # Up to 16x16: F(2x2); above, F(4x4) where the sides are multiples of 4, F(2x2)
    # where they are only even, XLA on odd sides or other kernels.
    ((1, 16, 16, 2), (3, 3, 2, 3), "winograd"),
    ((1, 12, 16, 2), (3, 3, 2, 3), "winograd"),
    ((1, 20, 20, 2), (3, 3, 2, 3), "winograd4"),
    ((1, 32, 32, 16), (3, 3, 16, 16), "winograd4"),     # 32x32 is not above the narrow bound
    ((1, 18, 18, 2), (3, 3, 2, 3), "winograd"),
    ((1, 15, 15, 2), (3, 3, 2, 3), "xla"),
    ((1, 10, 12, 2), (5, 5, 2, 3), "xla"),
    # Above 32x32, narrow layers (C * O <= 512) take XLA's convolution.
    ((1, 64, 64, 1), (3, 3, 1, 16), "xla"),
    ((1, 64, 64, 16), (3, 3, 16, 32), "xla"),
    ((1, 64, 64, 32), (3, 3, 32, 32), "winograd4"),
])
def test_auto_method_by_map_size_and_width(x_shape, k_shape, method):
    assert conv_ops.auto_method(x_shape, k_shape) == method
    # conv_same(method="auto") computes exactly what the chosen method computes.
    x = jnp.asarray(_rand(24, *x_shape[:3], k_shape[2]), jnp.float32)
    k = jnp.asarray(_rand(23, *k_shape), jnp.float32)
    np.testing.assert_array_equal(ops.conv_same(x, k), ops.conv_same(x, k, method=method))


def test_conv_same_uses_flax_parameters_unchanged():
    layer = nnx.Conv(4, 6, kernel_size=(3, 3), padding="SAME", use_bias=False, rngs=nnx.Rngs(1))
    x = jnp.asarray(_rand(6, 2, 8, 8, 4), jnp.float32)
    for name, f in CONVS.items():
        np.testing.assert_allclose(f(x, layer.kernel[...]), layer(x), rtol=1e-5, atol=1e-5,
                                   err_msg=name)


def test_conv_same_auto_picks_a_correct_method_for_every_size():
    for h, c in [(4, 8), (16, 4), (32, 2), (15, 3), (10, 2)]:
        x, k = jnp.asarray(_rand(7, 1, h, h, c), jnp.float32), jnp.asarray(_rand(8, 3, 3, c, 3), jnp.float32)
        # 32x32 takes F(4x4, 3x3): float32 error up to ~1e-5 of the largest entry.
        want = _ref_conv(x, k)
        np.testing.assert_allclose(ops.conv_same(x, k), want, rtol=0, atol=2e-5 * np.abs(want).max())


def test_conv_same_bad_input():
    with pytest.raises(ValueError, match="odd"):
        ops.conv_same_im2col(jnp.ones((1, 4, 4, 2)), jnp.ones((2, 2, 2, 3)))
    with pytest.raises(ValueError, match="channels"):
        ops.conv_same(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 5, 3)))
    with pytest.raises(ValueError, match="method"):
        ops.conv_same(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 3)), method="fft")
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        ops.conv_same(jnp.ones((4, 4, 2)), jnp.ones((3, 3, 2, 3)))


# --- 3x3 convolution of a nearest 2x up-sampled map -------------------------------------

def _ref_upsampled_conv(x, k):
    return _ref_conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2), k)


@pytest.mark.parametrize("method,h,w,cin,cout", [
    ("auto", 8, 8, 4, 3),       # low-resolution 8x8: im2col
    ("auto", 16, 12, 3, 2),     # 16x12: Winograd F(4x4) at the low resolution
    ("auto", 10, 6, 2, 3),      # 10x6: F(2x2) (sides not multiples of 4)
    ("xla", 5, 7, 2, 3),        # odd sides
    ("im2col", 1, 3, 3, 2),     # a single row: every tap but the middle row is padding
])
def test_conv_same_upsampled_matches_the_convolution_of_the_upsampled_map(method, h, w, cin, cout):
    x, k = _rand(21, 2, h, w, cin), _rand(22, 3, 3, cin, cout)
    _check_against_float64(lambda x, k: ops.conv_same_upsampled(x, k, method=method),
                           _ref_upsampled_conv, [x, k], (2, 2 * h, 2 * w, cout), rtol=2e-5)


def test_conv_same_upsampled_phases_layout():
    x, k = jnp.asarray(_rand(23, 2, 4, 6, 3), jnp.float32), jnp.asarray(_rand(24, 3, 3, 3, 5), jnp.float32)
    y = ops.conv_same_upsampled(x, k)
    p = ops.conv_same_upsampled(x, k, phases=True)
    assert y.shape == (2, 8, 12, 5) and p.shape == (2, 4, 6, 2, 2, 5)
    for a in (0, 1):
        for b in (0, 1):   # phase (a, b) of pixel (i, j) is full-resolution (2i + a, 2j + b)
            np.testing.assert_array_equal(p[:, :, :, a, b], y[:, a::2, b::2])
    np.testing.assert_array_equal(ops.depth_to_space_2x(p), y)


def test_subpixel_kernel_hand_computed():
    # k = 1..9 (one channel): phase (0, 0) reads low-resolution offsets -1 and 0 in both
    # directions with the taps that land there summed; phase (1, 1) offsets 0 and +1.
    k = jnp.arange(1.0, 10.0).reshape(3, 3, 1, 1)
    sk = ops.subpixel_kernel(k)
    assert sk.shape == (3, 3, 1, 4)
    want = {
        (0, 0): [[1, 2 + 3, 0], [4 + 7, 5 + 6 + 8 + 9, 0], [0, 0, 0]],
        (0, 1): [[0, 1 + 2, 3], [0, 4 + 5 + 7 + 8, 6 + 9], [0, 0, 0]],
        (1, 0): [[0, 0, 0], [1 + 4, 2 + 3 + 5 + 6, 0], [7, 8 + 9, 0]],
        (1, 1): [[0, 0, 0], [0, 1 + 2 + 4 + 5, 3 + 6], [0, 7 + 8, 9]],
    }
    for (a, b), w in want.items():
        np.testing.assert_array_equal(sk[:, :, 0, 2 * a + b], np.array(w, np.float32))
        assert float(sk[:, :, 0, 2 * a + b].sum()) == 45.0   # every tap once per phase
    with pytest.raises(ValueError, match=r"\[3, 3, C, O\]"):
        ops.subpixel_kernel(jnp.ones((5, 5, 1, 1)))
    with pytest.raises(ValueError, match="channels"):
        ops.conv_same_upsampled(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 5, 3)))


def test_upsample_conv_layer_matches_flax_and_its_running_statistics(monkeypatch):
    # The Attention U-Net's up_conv block: "cpu" (low-resolution sub-pixel convolution,
    # BatchNorm on the phases) against "flax" (nearest up-sampling, nnx.Conv,
    # nnx.BatchNorm): outputs, gradients and running statistics, training mode. The
    # full-resolution map (34x32, 3 -> 4) is a narrow layer above 32x32, where "cpu"
    # takes the sub-pixel form; a small map keeps the full-resolution form.
    from echojax.models import layers

    calls = []
    upsampled = ops.conv_same_upsampled
    monkeypatch.setattr(ops, "conv_same_upsampled", lambda *a, **k: calls.append(1) or upsampled(*a, **k))

    def run(impl, h, w):
        block = layers.UpsampleConv(3, 4, impl=impl, rngs=nnx.Rngs(0))
        block.train()
        x = jnp.asarray(_rand(25, 2, h, w, 3), jnp.float32)
        ct = jnp.asarray(_rand(26, 2, 2 * h, 2 * w, 4), jnp.float32)
        graphdef, params, rest = nnx.split(block, nnx.Param, ...)

        def f(p, x):
            m = nnx.merge(graphdef, p, rest, copy=True)
            return m(x), nnx.state(m, nnx.BatchStat)

        y, stats = f(params, x)
        grads = jax.grad(lambda p, x: jnp.sum(f(p, x)[0] * ct), argnums=(0, 1))(params, x)
        return y, stats, grads

    for (h, w), subpixel in [((17, 16), True), ((6, 4), False)]:
        calls.clear()
        (y0, s0, g0), (y1, s1, g1) = run("flax", h, w), run("cpu", h, w)
        assert bool(calls) == subpixel
        assert y1.shape == (2, 2 * h, 2 * w, 4)
        np.testing.assert_allclose(y1, y0, rtol=0, atol=1e-5)
        for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s0)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * max(1.0, float(np.abs(b).max())))


# --- max pooling -----------------------------------------------------------------------

def test_max_pool_matches_flax_values_and_gradients():
    # Continuous random input: no ties, so the gradients agree exactly.
    x = jnp.asarray(_rand(9, 2, 6, 4, 3), jnp.float32)

    def ref(x):
        return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")

    ct = jnp.asarray(_rand(10, 2, 3, 2, 3), jnp.float32)
    (want, (gw,)), (got, (gg,)) = _value_and_grads(ref, [x], ct), _value_and_grads(ops.max_pool_2x2, [x], ct)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(gg, gw)


def test_max_pool_hand_computed():
    x = jnp.asarray([[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 7.0, 6.0]]).reshape(1, 2, 4, 1)
    np.testing.assert_array_equal(ops.max_pool_2x2(x)[0, :, :, 0], [[5.0, 7.0]])


def test_max_pool_bad_input():
    with pytest.raises(ValueError, match="even"):
        ops.max_pool_2x2(jnp.ones((1, 3, 4, 1)))
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]"):
        ops.max_pool_2x2(jnp.ones((3, 4, 1)))


# --- narrow layers ---------------------------------------------------------------------

# --- BatchNorm in training mode --------------------------------------------------------

def _ref_batch_norm(x, scale, bias, relu):
    """``nnx.BatchNorm``'s training-mode map (fast variance), written out."""
    mean = x.mean((0, 1, 2))
    var = jnp.maximum(0.0, (x * x).mean((0, 1, 2)) - mean * mean)
    y = (x - mean) * (jax.lax.rsqrt(var + 1e-5) * scale) + bias
    return (jnp.maximum(y, 0.0) if relu else y), mean, var


@pytest.mark.parametrize("relu", [True, False])
def test_batch_norm_train_matches_float64_values_and_gradients(relu):
    # Mean far from zero (as after a biased conv): the fast variance cancels, so the
    # float32 tolerance is looser than for the convolutions. Cotangents on all three
    # outputs (mean and var too), so every term of the hand-written VJP is checked.
    shape = (2, 4, 6, 3)
    x = _rand(30, *shape) * 2.0 + 3.0
    scale, bias = _rand(31, 3) + 1.5, _rand(32, 3)
    cts = (_rand(33, *shape), _rand(34, 3), _rand(35, 3))

    def check(dtype, atol):
        args = [jnp.asarray(a, dtype) for a in (x, scale, bias)]
        ct = tuple(jnp.asarray(c, dtype) for c in cts)
        got, vjp = jax.vjp(lambda *a: ops.batch_norm_train(*a, 1e-5, relu), *args)
        with jax.enable_x64(True):
            a64 = [jnp.asarray(a, jnp.float64) for a in (x, scale, bias)]
            want, vjp64 = jax.vjp(lambda *a: _ref_batch_norm(*a, relu), *a64)
            want_g = vjp64(tuple(jnp.asarray(c, jnp.float64) for c in cts))
            want, want_g = jax.tree.map(np.asarray, (want, want_g))
        for name, g, w in zip(["y", "mean", "var", "dx", "dscale", "dbias"],
                              [*got, *vjp(ct)], [*want, *want_g]):
            assert np.asarray(g).dtype == dtype
            np.testing.assert_allclose(g, w, rtol=0, atol=atol * np.abs(w).max(), err_msg=name)

    with jax.enable_x64(True):
        check(np.float64, 1e-12)
    check(np.float32, 2e-5)


def test_batch_norm_train_hand_computed():
    # One channel, values 1, 3 (mean 2, variance 1): y = +-1 / sqrt(1 + eps) * 2 + 0.5.
    x = jnp.asarray([1.0, 3.0]).reshape(1, 1, 2, 1)
    y, mean, var = ops.batch_norm_train(x, jnp.asarray([2.0]), jnp.asarray([0.5]), 1e-5, True)
    s = 2.0 / np.sqrt(1.0 + 1e-5)
    np.testing.assert_allclose(y.ravel(), [0.0, 0.5 + s], rtol=1e-6)   # 0.5 - s < 0: ReLU
    np.testing.assert_allclose([mean[0], var[0]], [2.0, 1.0], rtol=1e-6)


def test_batch_norm_train_bad_input():
    with pytest.raises(ValueError, match=r"\[3\]"):
        ops.batch_norm_train(jnp.ones((2, 4, 4, 3)), jnp.ones(4), jnp.ones(3), 1e-5, True)
    with pytest.raises(ValueError, match="at least 2 axes"):
        ops.batch_norm_train(jnp.ones(3), jnp.ones(3), jnp.ones(3), 1e-5, True)


def test_apply_batch_norm_matches_nnx_batch_norm_and_its_running_stats():
    from echojax.models import layers

    x = jnp.asarray(_rand(40, 2, 4, 4, 3) + 1.0, jnp.float32)
    ct = jnp.asarray(_rand(41, 2, 4, 4, 3), jnp.float32)
    results = {}
    for impl in ("cpu", "flax"):
        norm = layers.batch_norm(3, dtype=None, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
        norm.scale[...] = jnp.asarray(_rand(42, 3) + 1.5, jnp.float32)
        norm.bias[...] = jnp.asarray(_rand(43, 3), jnp.float32)
        graphdef, params, rest = nnx.split(norm, nnx.Param, ...)

        def f(p, x, graphdef=graphdef, rest=rest, impl=impl):
            m = nnx.merge(graphdef, p, rest, copy=True)
            y = layers.apply_batch_norm(m, x, relu=True, impl=impl)
            return y, nnx.state(m, nnx.BatchStat)

        y, stats = f(params, x)
        grads = jax.grad(lambda p, x: jnp.sum(f(p, x)[0] * ct), argnums=(0, 1))(params, x)
        results[impl] = (y, stats, grads)
    chex.assert_trees_all_close(results["cpu"], results["flax"], rtol=1e-5, atol=1e-5)
    # The running averages moved (momentum 0.9 from mean 0, var 1).
    mean = results["cpu"][1]["mean"][...]
    np.testing.assert_allclose(mean, 0.1 * np.asarray(x).mean((0, 1, 2)), rtol=1e-5)


@pytest.mark.parametrize("impl, fused", [("cpu", True), ("gpu", False), ("flax", False)])
def test_fused_batch_norm_only_in_the_cpu_implementation(impl, fused):
    # The fused form is an XLA:CPU measure: the other implementations trace
    # nnx.BatchNorm's own computation, no custom VJP.
    from echojax.models import layers

    norm = layers.batch_norm(3, dtype=None, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    x = jnp.ones((2, 4, 4, 3), jnp.float32)
    graphdef, state = nnx.split(norm)

    def f(state, x):
        return layers.apply_batch_norm(nnx.merge(graphdef, state), x, relu=True, impl=impl)

    primitives = {e.primitive.name for e in jax.make_jaxpr(f)(state, x).eqns}
    assert ("custom_vjp_call" in primitives) == fused


# --- 1x1 convolution -------------------------------------------------------------------

def test_conv_1x1_matches_lax_values_and_gradients():
    x, k, b = _rand(50, 2, 3, 5, 4), _rand(51, 1, 1, 4, 3), _rand(52, 3)
    _check_against_float64(ops.conv_1x1, lambda x, k, b: _ref_conv(x, k) + b, [x, k, b],
                           (2, 3, 5, 3), rtol=1e-5)


def test_conv_1x1_uses_flax_parameters_unchanged_and_bad_input():
    from echojax.models import layers

    layer = layers.Conv1x1(4, 3, impl="flax", rngs=nnx.Rngs(2))
    layer.conv.bias[...] = jnp.asarray(_rand(53, 3), jnp.float32)
    x = jnp.asarray(_rand(54, 2, 4, 4, 4), jnp.float32)
    fast = nnx.merge(nnx.graphdef(layers.Conv1x1(4, 3, impl="cpu", rngs=nnx.Rngs(0))),
                     nnx.state(layer))
    np.testing.assert_allclose(fast(x), layer(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[1, 1, C, O\]"):
        ops.conv_1x1(jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 3)))
    with pytest.raises(ValueError, match="channels"):
        ops.conv_1x1(jnp.ones((1, 4, 4, 2)), jnp.ones((1, 1, 5, 3)))


def test_3x3_layer_uses_xla_convolution_except_in_the_cpu_implementation():
    # The matmul / Winograd formulations are for XLA:CPU: "gpu" and "flax" leave every
    # map size to XLA's convolution (cuDNN on a GPU).
    from echojax.models import layers

    def primitives(impl, h):
        block = layers.ConvBNReLU(2, 3, impl=impl, rngs=nnx.Rngs(0))
        graphdef, state = nnx.split(block)
        jaxpr = jax.make_jaxpr(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.ones((1, h, h, 2)))
        return {e.primitive.name for e in jaxpr.eqns}

    for h in (4, 16, 32):
        assert "conv_general_dilated" not in primitives("cpu", h)
        for impl in ("gpu", "flax"):
            assert "conv_general_dilated" in primitives(impl, h)
    with pytest.raises(ValueError, match="unknown layer implementation 'fast'"):
        layers.ConvBNReLU(2, 3, impl="fast", rngs=nnx.Rngs(0))


# --- the Swin-UNet's dense layers and LayerNorm ------------------------------------------

@pytest.mark.parametrize("k, n", [(4, 6), (6, 4)])
def test_dense_matches_float64_values_and_gradients(k, n):
    # Both weight-gradient orders (N > K and N <= K) of the hand-written VJP.
    x, kernel, bias = _rand(60, 2, 3, 5, k), _rand(61, k, n), _rand(62, n)
    _check_against_float64(ops.dense, lambda x, k_, b: x @ k_ + b, [x, kernel, bias],
                           (2, 3, 5, n), rtol=1e-5)


def test_dense_bad_input():
    with pytest.raises(ValueError, match=r"kernel \[K, N\]"):
        ops.dense(jnp.ones((2, 3)), jnp.ones((4, 5)))


def _ref_layer_norm(x, scale, bias):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + 1e-5) * scale + bias


def test_layer_norm_matches_float64_values_and_gradients():
    # Mean far from zero: the two-pass variance keeps float32 accurate.
    x, scale, bias = _rand(63, 2, 7, 6) + 5.0, _rand(64, 6) + 1.0, _rand(65, 6)
    _check_against_float64(
        lambda x, s, b: ops.layer_norm(x, s, b, epsilon=1e-5, dtype=x.dtype), _ref_layer_norm,
        [x, scale, bias], (2, 7, 6), rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[6\]"):
        ops.layer_norm(jnp.ones((2, 6)), jnp.ones(5), jnp.ones(6), epsilon=1e-5, dtype=jnp.float32)


def test_fold_affine_hand_computed():
    # (xhat * s + t) @ K + b = xhat @ (s[:, None] K) + (t @ K + b).
    kernel = jnp.asarray([[1.0, 2.0], [3.0, 4.0]])
    folded, bias = ops.fold_affine(kernel, jnp.asarray([1.0, -1.0]), jnp.asarray([2.0, 10.0]),
                                   jnp.asarray([1.0, 1.0]))
    np.testing.assert_array_equal(folded, [[2.0, 4.0], [30.0, 40.0]])
    np.testing.assert_array_equal(bias, [5.0, 5.0])


@pytest.mark.parametrize("chunk_tokens", [None, 1, 7, 12, 1000])
def test_mlp_in_token_chunks_equals_the_whole(chunk_tokens):
    # 60 tokens: chunks of 1 (many), 6 (largest divisor of 60 below 7), 12, or one chunk.
    x = jnp.asarray(_rand(66, 3, 4, 5, 4), jnp.float32)
    k1, b1, k2, b2 = (jnp.asarray(_rand(67 + i, *s), jnp.float32)
                      for i, s in enumerate([(4, 8), (8,), (8, 3), (3,)]))

    def plain(x, k1, k2):
        return jax.nn.gelu(x @ k1 + b1, approximate=False) @ k2 + b2

    def f(x, k1, k2):
        return ops.mlp(x, k1, b1, k2, b2, chunk_tokens=chunk_tokens)

    ct = jnp.asarray(_rand(71, 3, 4, 5, 3), jnp.float32)
    got, want = _value_and_grads(f, [x, k1, k2], ct), _value_and_grads(plain, [x, k1, k2], ct)
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="chunk_tokens"):
        ops.token_chunks(lambda t: t, x, chunk_tokens=0)


def test_gelu_is_torch_exact_form():
    x = jnp.linspace(-6.0, 6.0, 101)
    np.testing.assert_allclose(ops.gelu(x), jax.nn.gelu(x, approximate=False), atol=2e-6)
    np.testing.assert_allclose(ops.gelu(jnp.asarray([0.0, 1.0])), [0.0, 0.8413447], rtol=1e-6)


@pytest.mark.parametrize("chunk_tokens", [None, 5])
def test_expand_norm_project_matches_the_plain_form(chunk_tokens):
    # LayerNorm(depth_to_space(x @ E)) @ K, written out, in float64.
    b, h, w, d, s, c, k = 2, 3, 2, 4, 2, 6, 3
    x, expand = _rand(72, b, h, w, d) + 0.5, _rand(73, d, s * s * c)
    scale, bias, kernel = _rand(74, c) + 1.0, _rand(75, c), _rand(76, c, k)

    def plain(x, expand, scale, bias, kernel):
        z = (x @ expand).reshape(b, h, w, s, s, c).transpose(0, 1, 3, 2, 4, 5)
        return _ref_layer_norm(z.reshape(b, h * s, w * s, c), scale, bias) @ kernel

    def op(x, expand, scale, bias, kernel):
        return ops.expand_norm_project(x, expand, scale, bias, kernel, factor=s, epsilon=1e-5,
                                       chunk_tokens=chunk_tokens)

    ct = _rand(77, b, h * s, w * s, k)
    with jax.enable_x64(True):
        args = [jnp.asarray(a, jnp.float64) for a in (x, expand, scale, bias, kernel)]
        want = jax.tree.map(np.asarray, _value_and_grads(plain, args, ct))
    got = _value_and_grads(op, [jnp.asarray(a, jnp.float32) for a in (x, expand, scale, bias, kernel)], ct)
    for g, w_ in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(g, w_, rtol=0, atol=2e-5 * np.abs(w_).max())
    with pytest.raises(ValueError, match=r"kernel must be \[6, K\]"):
        ops.expand_norm_project(*[jnp.asarray(a, jnp.float32) for a in (x, expand, scale, bias)],
                                jnp.ones((5, 3)), factor=s, epsilon=1e-5, chunk_tokens=None)


def test_gather_rows_by_matmul_and_additive_mask():
    table = jnp.arange(12.0).reshape(6, 2)
    index = np.array([[5, 0], [2, 2]])
    np.testing.assert_array_equal(ops.gather_rows_by_matmul(table, index), np.asarray(table)[index])
    with pytest.raises(ValueError, match="outside"):
        ops.gather_rows_by_matmul(table, np.array([[6]]))
    logits = jnp.asarray([[1.0, 2.0, 3.0]])
    weights = jax.nn.softmax(logits + ops.additive_mask(np.array([[True, False, True]])))
    np.testing.assert_array_equal(weights[0, 1], 0.0)
    np.testing.assert_allclose(weights[0, [0, 2]], jax.nn.softmax(jnp.asarray([1.0, 3.0])), rtol=1e-6)
