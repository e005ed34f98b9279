"""Swin-UNet numerics: every implementation in float32 against the plain one in float64.

``impl="flax"`` computes the network layer by layer as the reference
SwinTransformerSys does (roll, window partition, relative-position bias gathered from
the table, masked softmax, depth-to-space then LayerNorm then the 1x1 head, with
``nnx.Linear`` / ``nnx.LayerNorm``). ``"cpu"`` and ``"gpu"`` compute the same function in
rearranged forms (``echojax.ops``: the final expansion, LayerNorm and head on the
sub-pixel layout, LayerNorm scale and bias folded into the next dense layer, custom
backward passes; ``"cpu"`` also the MLP and the final variance in checkpointed token
chunks). Here the ``"flax"`` model runs in float64 on the same parameters and every
implementation's float32 logits and gradients (every parameter and the input) must
match it.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from echojax import models
from echojax.models import swin_unet

jax.config.update("jax_disable_most_optimizations", True)

# Tiny, but with everything switched on: 3 stages, several heads, shifted windows on
# non-square grids of 16x32 and 8x16 tokens (the 4x8 bottleneck is one window high and
# does not shift, as in the reference).
CONFIG = dict(patch_size=2, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 4),
              window_size=4, mlp_ratio=2.0, drop_path_rate=0.0)
INPUT_SHAPE = (2, 32, 64, 1)
# Token chunks of 96 (not a power of two) for "cpu": several chunks per stage, and the
# largest-divisor rule at work (1024 tokens at stage one -> chunks of 64).
CHUNK_TOKENS = 96


def _create(impl):
    return models.create("swin_unet", impl=impl, rngs=nnx.Rngs(0), chunk_tokens=CHUNK_TOKENS,
                         **CONFIG)


def _randomised_params(key):
    # Initial LayerNorm scales are 1 and biases 0, which would hide a mix-up between
    # them; random values everywhere make every parameter matter.
    state = nnx.state(_create("flax"), nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    leaves = [0.3 * jax.random.normal(k, x.shape, x.dtype) + (1.0 if x.ndim == 1 else 0.0)
              for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, leaves)


PARAMS = _randomised_params(jax.random.key(1))
X = jax.random.normal(jax.random.key(2), INPUT_SHAPE, jnp.float32)
WEIGHTS = jax.random.normal(jax.random.key(3), INPUT_SHAPE[:-1] + (4,), jnp.float32)


def _grad_fn(impl):
    """``value_and_grad`` of the weighted logit sum (logits as aux) of the ``impl``
    model in evaluation mode, over ``(params, x)``."""
    model = _create(impl)
    model.eval()
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)

    def objective(params, x, weights):
        logits = nnx.merge(graphdef, params, rest)(x)
        return jnp.sum(logits * weights), logits

    return jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)


def _run(impl, dtype=jnp.float32):
    cast = lambda a: jnp.asarray(np.asarray(a), dtype)  # noqa: E731
    (_, logits), (g_params, g_x) = jax.jit(_grad_fn(impl))(
        jax.tree.map(cast, PARAMS), cast(X), cast(WEIGHTS))
    return jax.tree.map(np.asarray, (logits, nnx.to_pure_dict(g_params), g_x))


@pytest.fixture(scope="module")
def reference():
    """The "flax" model's logits, parameter gradients and input gradient in float64."""
    with jax.enable_x64(True):
        return _run("flax", jnp.float64)


# float32 against float64: the largest error seen is about 1e-5 of the largest value.
RTOL = 5e-5


def _close(got, ref, what, rtol=RTOL):
    # Scale by the largest reference magnitude: entries near zero carry the rounding
    # of the large ones.
    err = np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30)
    assert err < rtol, f"{what}: relative error {err:.2e}"


@pytest.mark.parametrize("impl", models.IMPLS)
def test_logits_and_every_gradient_match_float64_reference(impl, reference):
    logits, g_params, g_x = _run(impl)
    ref_logits, ref_gp, ref_gx = reference
    assert ref_logits.dtype == np.float64 and logits.dtype == np.float32
    assert logits.shape == INPUT_SHAPE[:-1] + (4,)
    assert np.std(ref_logits) > 0.1  # a real signal, not a degenerate network
    _close(logits, ref_logits, "logits")
    _close(g_x, ref_gx, "input gradient")
    chex.assert_trees_all_equal_structs(g_params, ref_gp)
    for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(g_params), jax.tree.leaves(ref_gp)):
        assert g.shape == r.shape, path
        assert np.max(np.abs(r)) > 0, path
        _close(g, r, jax.tree_util.keystr(path))


def test_reference_detects_a_wrong_model(reference, monkeypatch):
    # The comparison has teeth: the same network without the shifted-window mask is far
    # outside the tolerance.
    monkeypatch.setattr(
        swin_unet, "shifted_window_mask",
        lambda h, w, ws, s: np.ones((h // ws, w // ws, ws * ws, ws * ws), bool))
    wrong = _run("cpu")[0]
    err = np.max(np.abs(wrong - reference[0])) / np.max(np.abs(reference[0]))
    assert err > 100 * RTOL


@pytest.mark.parametrize("impl, chunked", [("cpu", True), ("gpu", False), ("flax", False)])
def test_only_the_cpu_implementation_runs_token_chunks(impl, chunked):
    # Token chunks under jax.checkpoint are an XLA:CPU measure: the other
    # implementations trace no loop and no rematerialisation.
    jaxpr = jax.make_jaxpr(_grad_fn(impl))(PARAMS, X, WEIGHTS)
    primitives = {e.primitive.name for e in jaxpr.eqns}
    assert bool(primitives & {"scan", "while", "remat", "checkpoint"}) == chunked, primitives
