"""Tests of echojax.models: reference parameter counts, shapes, size checks, jit/grad,
the shifted-window mask, attention gates, train/eval behaviour, and a short overfit."""

import importlib.util
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from echojax import models
from echojax.models import swin_unet

jax.config.update("jax_disable_most_optimizations", True)

# The widely used PyTorch implementations at their reference sizes, in_channels=1,
# num_classes=4 (see the module docstrings).
REFERENCE_PARAMS = {"unet": 31_036_676, "attention_unet": 34_877_616, "swin_unet": 27_172_740}


def n_params(model: nnx.Module) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param)))


# Tests call models through jit: one compilation of the whole forward is several times
# faster on CPU than compiling each operation eagerly.
@nnx.jit
def forward(model, x):
    return model(x)


@nnx.jit
def forward_with_attention(model, x):
    return model(x, return_attention=True)


def tiny(name: str, **kw) -> nnx.Module:
    # The "cpu" implementation (what the default, "auto", gives on a CPU) unless a test
    # asks for another.
    return models.create(name, rngs=nnx.Rngs(0), **{"impl": "cpu", **models.PRESETS[name]["tiny"], **kw})


def test_architectures_and_presets():
    assert models.ARCHITECTURES == ("unet", "attention_unet", "swin_unet")
    for name in models.ARCHITECTURES:
        assert set(models.PRESETS[name]) == {"tiny", "cpu", "paper"}
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        models.create("vit", rngs=nnx.Rngs(0))
    assert models.IMPLS == ("flax", "cpu", "gpu")
    with pytest.raises(ValueError, match="unknown layer implementation 'fast'"):
        models.create("unet", impl="fast", rngs=nnx.Rngs(0))


@pytest.mark.parametrize("name", models.ARCHITECTURES)
def test_reference_parameter_counts(name):
    # Defaults are the reference sizes, and the "paper" preset says the same thing.
    for overrides in ({}, models.PRESETS[name]["paper"]):
        model = nnx.eval_shape(lambda overrides=overrides: models.create(name, rngs=nnx.Rngs(0), **overrides))
        assert n_params(model) == REFERENCE_PARAMS[name]
    # Parameters are float32 even when computing in bfloat16.
    model = nnx.eval_shape(lambda: models.create(name, rngs=nnx.Rngs(0), dtype=jnp.bfloat16))
    assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {np.dtype(np.float32)}


def test_running_statistics_are_not_parameters():
    model = nnx.eval_shape(lambda: models.create("unet", rngs=nnx.Rngs(0)))
    stats = jax.tree.leaves(nnx.state(model, nnx.BatchStat))
    # 2 x (mean, var) per BatchNorm; 2 BatchNorms per DoubleConv; 9 DoubleConvs.
    assert len(stats) == 9 * 2 * 2
    assert n_params(model) == REFERENCE_PARAMS["unet"]


def test_sizes_of_presets_are_ordered():
    for name in models.ARCHITECTURES:
        counts = [
            n_params(nnx.eval_shape(
                lambda name=name, s=s: models.create(name, rngs=nnx.Rngs(0), **models.PRESETS[name][s])))
            for s in ("tiny", "cpu")
        ]
        # The paper size is checked against the references above.
        assert counts[0] < 20_000 < counts[1] < 3_000_000, (name, counts)


@pytest.mark.parametrize(
    "name, height, width, in_channels, num_classes",
    [
        ("unet", 16, 16, 1, 4),
        ("unet", 8, 24, 3, 2),
        ("attention_unet", 16, 16, 1, 4),
        ("attention_unet", 12, 20, 2, 3),
        ("swin_unet", 16, 16, 1, 4),
        ("swin_unet", 32, 48, 3, 2),
    ],
)
def test_output_shapes(name, height, width, in_channels, num_classes):
    model = tiny(name, in_channels=in_channels, num_classes=num_classes)
    model.eval()
    x = jax.random.normal(jax.random.key(1), (2, height, width, in_channels))
    y = forward(model, x)
    assert y.shape == (2, height, width, num_classes)
    assert y.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize(
    "name, shape, match",
    [
        ("unet", (1, 18, 16, 1), "multiples of 4, got 18x16"),
        ("unet", (1, 16, 16, 3), r"shape \[B, H, W, 1\]"),
        ("unet", (16, 16, 1), r"shape \[B, H, W, 1\]"),
        ("attention_unet", (1, 16, 6, 1), "multiples of 4, got 16x6"),
        ("swin_unet", (1, 24, 32, 1), "multiples of 16, got 24x32"),
        ("swin_unet", (1, 8, 8, 1), "multiples of 16, got 8x8"),
    ],
)
def test_unsupported_inputs_raise(name, shape, match):
    model = tiny(name)
    with pytest.raises(ValueError, match=match):
        model(jnp.zeros(shape))


def test_reference_swin_size_constraint_is_256():
    model = nnx.eval_shape(lambda: models.create("swin_unet", rngs=nnx.Rngs(0)))
    assert model.size_multiple == 4 * 8 * 8


def test_bfloat16_compute_returns_float32_logits():
    model = tiny("unet", dtype=jnp.bfloat16)
    y = forward(model, jnp.ones((2, 8, 8, 1)))
    assert y.dtype == jnp.float32 and y.shape == (2, 8, 8, 4)
    model = tiny("swin_unet", dtype=jnp.bfloat16)
    y = forward(model, jnp.ones((1, 16, 16, 1)))
    assert y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize("name", models.ARCHITECTURES)
def test_jit_compiles_once_and_every_parameter_gets_a_gradient(name):
    kw = {"drop_path_rate": 0.2} if name == "swin_unet" else {}
    model = tiny(name, **kw)
    model.train()
    traces = {"forward": 0, "step": 0}

    @nnx.jit
    def forward(model, x):
        traces["forward"] += 1
        return model(x)

    @nnx.jit
    def grad_step(model, x, labels):
        traces["step"] += 1

        def loss_fn(model):
            logits = model(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        return nnx.value_and_grad(loss_fn)(model)

    rng = np.random.default_rng(0)
    for _ in range(2):
        x = jnp.asarray(rng.normal(size=(2, 16, 16, 1)), jnp.float32)
        labels = jnp.asarray(rng.integers(0, 4, size=(2, 16, 16)))
        assert forward(model, x).shape == (2, 16, 16, 4)
        loss, grads = grad_step(model, x, labels)
        assert np.isfinite(float(loss))
    assert traces == {"forward": 1, "step": 1}

    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert len(leaves) == len(jax.tree.leaves(nnx.state(model, nnx.Param)))
    for path, g in leaves:
        g = np.asarray(g)
        assert np.all(np.isfinite(g)), path
        # A conv bias right before a training-mode BatchNorm has a zero gradient in exact
        # arithmetic; rounding leaves it tiny but nonzero. Exactly zero would mean the
        # parameter is disconnected from the loss.
        assert np.any(g != 0), path


def test_batchnorm_train_and_eval_differ():
    model = tiny("unet")
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    stats_before = jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat))

    model.eval()
    y_eval = forward(model, x)
    # Eval: per-example (running statistics), no statistics update.
    np.testing.assert_allclose(forward(model, x[:1])[0], y_eval[0], rtol=1e-5, atol=1e-5)
    jax.tree.map(np.testing.assert_array_equal, stats_before,
                 jax.tree.map(np.asarray, nnx.state(model, nnx.BatchStat)))

    model.train()
    y_train = forward(model, x)
    # Train: batch statistics, so one example's output depends on the others, and the
    # running statistics move.
    assert not np.allclose(forward(model, x[:1])[0], y_train[0], atol=1e-3)
    assert not np.allclose(y_train, y_eval, atol=1e-3)
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), stats_before,
                           nnx.state(model, nnx.BatchStat))
    assert all(jax.tree.leaves(changed))


def test_swin_drop_path_only_in_training():
    model = tiny("swin_unet", drop_path_rate=0.5)
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 1))
    model.eval()
    np.testing.assert_array_equal(forward(model, x), forward(model, x))
    model.train()
    a, b = forward(model, x), forward(model, x)
    assert not np.allclose(a, b)  # a fresh stochastic-depth draw per call


# --- Layer implementations ---------------------------------------------------------------


@pytest.mark.parametrize("name", models.ARCHITECTURES)
def test_every_impl_has_the_same_parameter_tree(name):
    # Names, shapes, dtypes and (same keys) initial values: a checkpoint written with one
    # implementation loads into any other.
    for size in ("tiny", "paper"):
        trees = [nnx.state(nnx.eval_shape(lambda impl=impl, size=size: models.create(
            name, impl=impl, rngs=nnx.Rngs(0), **models.PRESETS[name][size])), nnx.Param)
            for impl in models.IMPLS]
        for tree in trees[1:]:
            chex.assert_trees_all_equal_structs(tree, trees[0])
            chex.assert_trees_all_equal_shapes_and_dtypes(tree, trees[0])
    states = [nnx.state(tiny(name, impl=impl)) for impl in models.IMPLS]
    for state in states[1:]:
        chex.assert_trees_all_equal(state, states[0])


def _random_state(model, key):
    """The model's state with every parameter drawn at random (BatchNorm scales around 1)."""
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    leaves = [0.3 * jax.random.normal(k, x.shape, x.dtype) + (1.0 if x.ndim == 1 else 0.0)
              for k, x in zip(keys, leaves)]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))
    return nnx.state(model)


def _run(graphdef, state, x, *, train: bool):
    """Logits, gradients of a weighted logit sum wrt the parameters and the input, and
    the BatchNorm statistics after the call, of ``merge(graphdef, state)``."""
    weights = jax.random.normal(jax.random.key(5), x.shape[:-1] + (4,), jnp.float32).astype(x.dtype)
    params, rest = nnx.split_state(state, nnx.Param, ...)

    def objective(params, x):
        model = nnx.merge(graphdef, params, rest, copy=True)
        model.train() if train else model.eval()
        logits = model(x)
        return jnp.sum(logits * weights), (logits, nnx.state(model, nnx.BatchStat))

    (_, (logits, stats)), grads = jax.jit(jax.value_and_grad(
        objective, argnums=(0, 1), has_aux=True))(params, x)
    return jax.tree.map(np.asarray, (logits, stats, grads))


def _assert_close(got, want, rtol):
    # Per leaf, relative to its largest entry; leaves whose exact value is ~0 (a conv
    # bias right before a training-mode BatchNorm) relative to the largest gradient.
    floor = 1e-2 * max(np.max(np.abs(w)) for w in jax.tree.leaves(want))
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        assert g.shape == w.shape, path
        err = np.max(np.abs(g - w)) / max(np.max(np.abs(w)), floor)
        assert err < rtol, f"{jax.tree_util.keystr(path)}: relative error {err:.2e}"


# The tiny U-Nets at 32x32 run every 3x3 method of the "cpu" implementation: Winograd
# F(4x4) at 32x32, F(2x2) at 16x16, im2col at 8x8 (echojax.ops.conv.auto_method).
@pytest.mark.parametrize("name", ["unet", "attention_unet"])
@pytest.mark.parametrize("train", [True, False])
def test_every_impl_matches_the_flax_reference_in_float64(name, train):
    reference = models.create(name, impl="flax", rngs=nnx.Rngs(0), **models.PRESETS[name]["tiny"])
    state = _random_state(reference, jax.random.key(1))
    x = jax.random.normal(jax.random.key(2), (2, 32, 32, 1), jnp.float32)
    with jax.enable_x64(True):
        to64 = lambda a: jnp.asarray(np.asarray(a), jnp.float64)  # noqa: E731
        want = _run(nnx.graphdef(reference), jax.tree.map(to64, state), to64(x), train=train)
    assert jax.tree.leaves(want)[0].dtype == np.float64
    for impl in models.IMPLS:
        # The float32 model of each implementation, loaded with the reference's state.
        graphdef = nnx.graphdef(tiny(name, impl=impl))
        got = _run(graphdef, state, x, train=train)
        assert got[0].dtype == np.float32
        chex.assert_trees_all_equal_structs(got, want)
        # float32 rounding through training-mode BatchNorms with random parameters:
        # the plain Flax layers themselves measured up to 3e-4 here (attention gates);
        # a wrong computation is off by O(1).
        _assert_close(got, want, rtol=1e-3)


def test_swin_params_of_one_impl_load_into_another():
    # (The float64 comparisons of the Swin-UNet are in test_swin_unet_perf.py.)
    source = tiny("swin_unet", impl="cpu")
    state = _random_state(source, jax.random.key(3))
    x = jax.random.normal(jax.random.key(4), (2, 16, 32, 1), jnp.float32)
    outputs = {impl: forward(nnx.merge(nnx.graphdef(tiny("swin_unet", impl=impl)), state), x)
               for impl in models.IMPLS}
    chex.assert_trees_all_close(outputs["cpu"], outputs["flax"], rtol=1e-4, atol=1e-4)
    chex.assert_trees_all_close(outputs["gpu"], outputs["flax"], rtol=1e-4, atol=1e-4)


def test_impl_is_part_of_the_compiled_program():
    # The implementation is static model structure: a jitted function traces once per
    # implementation, never reusing one implementation's program for another.
    traces = []

    @nnx.jit
    def f(model, x):
        traces.append(model.impl)
        return model(x)

    x = jnp.ones((1, 16, 16, 1))
    for impl in ("cpu", "flax", "cpu", "flax"):
        f(tiny("unet", impl=impl), x)
    assert traces == ["cpu", "flax"]


def test_model_config_records_the_impl():
    from echojax.config import ModelConfig

    auto = "cpu" if jax.default_backend() == "cpu" else "gpu"
    assert ModelConfig().impl == ModelConfig(impl="auto").impl == auto  # "auto" by default
    assert ModelConfig(impl="flax").impl == "flax"
    with pytest.raises(ValueError, match="unknown layer implementation 'fast'"):
        ModelConfig(impl="fast")


# --- Swin internals -------------------------------------------------------------------


def test_relative_position_index_hand_values():
    idx = swin_unet.relative_position_index(2)  # tokens (0,0), (0,1), (1,0), (1,1)
    # offset (dy, dx) -> (dy + 1) * 3 + (dx + 1)
    expected = np.array([[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]])
    np.testing.assert_array_equal(idx, expected)
    assert swin_unet.relative_position_index(8).max() == 15 * 15 - 1


def test_shifted_window_mask_hand_values():
    mask = swin_unet.shifted_window_mask(8, 8, 4, 2)
    assert mask.shape == (2, 2, 16, 16)
    assert mask[0, 0].all()  # interior window: one region
    # Last column of windows: two regions of 2 columns each (8 tokens each).
    assert mask[0, 1].sum() == 2 * 8 * 8
    # Corner window: four regions of 2x2 tokens.
    assert mask[1, 1].sum() == 4 * 4 * 4
    np.testing.assert_array_equal(mask, np.swapaxes(mask, -1, -2))


def _changed_tokens(block, x, token):
    """Set of (row, col) grid positions whose block output changes when the input token
    at ``token`` is perturbed."""
    # A random direction: a constant shift of all channels would vanish in LayerNorm.
    delta = jax.random.normal(jax.random.key(7), x.shape[-1:])
    x2 = x.at[0, token[0], token[1]].add(delta)
    # A fresh jit per call: the mask is a trace-time constant (see the monkeypatch below).
    apply = nnx.jit(lambda b, t: b(t))
    diff = np.abs(np.asarray(apply(block, x2) - apply(block, x)))[0].max(-1)
    return {tuple(int(v) for v in p) for p in np.argwhere(diff > 0)}


def _square(rows, cols):
    return {(r, c) for r in rows for c in cols}


def test_shifted_window_mask_blocks_attention_across_shift_boundaries(monkeypatch):
    # Grid 16x16, window 4, shift 2: the rolled grid's last window row/column joins
    # grid rows/cols 14, 15 with 0, 1, which are not neighbours in the image.
    block = swin_unet.SwinBlock(8, 2, window_size=4, shifted=True, rngs=nnx.Rngs(0))
    block.eval()
    x = jax.random.normal(jax.random.key(0), (1, 16, 16, 8))

    # Token (1, 1) sits in the rolled corner window, in its 2x2 region of rows/cols
    # {0, 1}: only that region sees it.
    assert _changed_tokens(block, x, (1, 1)) == _square((0, 1), (0, 1))
    # An interior token: its whole shifted window (rows/cols 2..5) sees it.
    assert _changed_tokens(block, x, (5, 3)) == _square(range(2, 6), range(2, 6))

    # Without the mask, the corner window mixes all of rows/cols {14, 15, 0, 1}.
    monkeypatch.setattr(
        swin_unet, "shifted_window_mask",
        lambda h, w, ws, s: np.ones((h // ws, w // ws, ws * ws, ws * ws), bool),
    )
    assert _changed_tokens(block, x, (1, 1)) == _square((14, 15, 0, 1), (14, 15, 0, 1))


def test_unshifted_block_attends_within_aligned_windows():
    block = swin_unet.SwinBlock(8, 2, window_size=4, shifted=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 8))
    assert _changed_tokens(block, x, (1, 6)) == _square(range(0, 4), range(4, 8))


def test_no_shift_when_grid_is_one_window():
    # As in the reference: a 4x4 grid with window 4 has nothing to shift.
    block = swin_unet.SwinBlock(8, 2, window_size=4, shifted=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))
    assert _changed_tokens(block, x, (0, 0)) == _square(range(4), range(4))


def test_patch_merging_and_expanding_layout():
    rngs = nnx.Rngs(0)
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    merge = swin_unet.PatchMerging(3, rngs=rngs)
    expand = swin_unet.PatchExpand(6, 3, scale=2, rngs=rngs)
    assert forward(merge, x).shape == (2, 2, 2, 6)
    assert forward(expand, forward(merge, x)).shape == (2, 4, 4, 3)
    # Depth-to-space: make channel group (i, j) of the expansion the one-hot e_{2i+j};
    # LayerNorm keeps the argmax, which must land at sub-pixel (i, j).
    final = swin_unet.PatchExpand(1, 4, scale=2, rngs=rngs)
    final.expand.kernel[...] = jnp.eye(4).reshape(1, 16)
    y = forward(final, jnp.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(np.argmax(y[0], -1), [[0, 1], [2, 3]])


# --- Attention gates --------------------------------------------------------------------


def test_attention_gate_coefficients():
    model = tiny("attention_unet")
    model.train()
    x = jax.random.normal(jax.random.key(0), (2, 16, 24, 1))
    logits, alphas = forward_with_attention(model, x)
    # One gate per skip, coarsest first, each on its skip's grid (widths 4, 8, 16).
    assert [a.shape for a in alphas] == [(2, 8, 12, 1), (2, 16, 24, 1)]
    for a in alphas:
        assert bool(jnp.all((a >= 0) & (a <= 1)))
        assert float(a.std()) > 0  # not a constant gate
    model.eval()
    np.testing.assert_array_equal(forward_with_attention(model, x)[0], forward(model, x))


def test_attention_gate_formula():
    gate = models.AttentionGate(3, 2, 4, rngs=nnx.Rngs(0))
    gate.eval()  # BatchNorm with initial running stats (mean 0, var 1): scale only
    g = jax.random.normal(jax.random.key(1), (1, 5, 5, 3))
    x = jax.random.normal(jax.random.key(2), (1, 5, 5, 2))
    gated, alpha = gate(g, x)
    s = 1.0 / np.sqrt(1.0 + 1e-5)
    a = jax.nn.relu(gate.w_g(g) * s + gate.w_x(x) * s)
    expected = jax.nn.sigmoid(gate.psi(a) * s)
    np.testing.assert_allclose(alpha, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gated, expected * x, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="must share B, H, W"):
        gate(g[:, :4], x)


# --- Overfit (the full table is bench/overfit.py) ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", models.ARCHITECTURES)
def test_tiny_models_overfit_four_blob_images(name, optimized_xla):
    spec = importlib.util.spec_from_file_location(
        "bench_overfit", Path(__file__).resolve().parents[1] / "bench" / "overfit.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # The steps to Dice 0.9 vary with the seed and the CPU (a plateau of varying length);
    # the budget is several times the worst measured (tests/MARGINS.md).
    steps, dice = bench.fit_until(name, target=0.9, max_steps=2000, size=32)
    assert dice >= 0.9, (steps, dice)
