"""Swin-UNet numerics against a plain float64 reference.

``echojax.models.swin_unet`` computes some layers in rearranged forms that are faster
on the CPU: the final expansion, LayerNorm and head on the sub-pixel layout with the
LayerNorm's centring folded into the weights, LayerNorm scale and bias folded into the
next dense layer, the MLP and the final variance in checkpointed token chunks, custom
backward passes for dense layers and LayerNorm. This file re-implements the network
the plain way, layer by layer as written in the reference SwinTransformerSys (roll,
window partition, relative-position bias gathered from the table, masked softmax,
depth-to-space then LayerNorm then the 1x1 head), runs it in float64 on the model's own
parameters, and requires the float32 model's logits and gradients (every parameter and
the input) to match it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.scipy.special import erf

from echojax import models
from echojax.models import swin_unet

jax.config.update("jax_disable_most_optimizations", True)

EPS = 1e-5


# --- The plain formulation, on a pure parameter dict, any float dtype -------------------


def ref_linear(p, x):
    y = x @ p["kernel"]
    return y + p["bias"] if "bias" in p else y


def ref_layer_norm(p, x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + EPS) * p["scale"] + p["bias"]


def ref_partition(x, ws):
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // ws, w // ws, ws * ws, c)


def ref_merge(x, ws):
    b, nh, nw, _, c = x.shape
    x = x.reshape(b, nh, nw, ws, ws, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, nh * ws, nw * ws, c)


def ref_mask(h, w, ws, shift):
    labels = np.zeros((h, w), np.int32)
    bounds = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    for i, (r, c) in enumerate((r, c) for r in bounds for c in bounds):
        labels[r, c] = i
    win = ref_partition(labels[None, :, :, None], ws)[0, ..., 0]
    return win[..., :, None] == win[..., None, :]


def ref_window_attention(p, x, heads, ws, mask):
    *lead, n, dim = x.shape
    qkv = ref_linear(p["qkv"], x).reshape(*lead, n, 3, heads, dim // heads)
    q, k, v = qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]
    logits = jnp.einsum("...qhd,...khd->...hqk", q * (dim // heads) ** -0.5, k)
    coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + ws - 1
    index = rel[0] * (2 * ws - 1) + rel[1]
    bias = p["relative_position_bias_table"][index.reshape(-1)].reshape(n, n, heads)
    logits = logits + bias.transpose(2, 0, 1)
    if mask is not None:
        logits = jnp.where(mask[..., None, :, :], logits, jnp.finfo(logits.dtype).min)
    attn = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("...hqk,...khd->...qhd", attn, v).reshape(*lead, n, dim)
    return ref_linear(p["proj"], out)


def ref_block(p, x, heads, ws, shifted, unmasked):
    _, h, w, _ = x.shape
    shift = ws // 2 if shifted and min(h, w) > ws else 0
    y = ref_layer_norm(p["norm1"], x)
    mask = None
    if shift:
        y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
        mask = ref_mask(h, w, ws, shift)
    if unmasked:
        mask = None
    y = ref_merge(ref_window_attention(p["attn"], ref_partition(y, ws), heads, ws, mask), ws)
    if shift:
        y = jnp.roll(y, (shift, shift), axis=(1, 2))
    x = x + y
    y = ref_linear(p["mlp"]["fc1"], ref_layer_norm(p["norm2"], x))
    y = 0.5 * y * (1.0 + erf(y / np.sqrt(2.0)))  # exact GELU, as torch.nn.GELU()
    return x + ref_linear(p["mlp"]["fc2"], y)


def ref_stage(p, x, heads, ws, unmasked):
    for i in sorted(p["blocks"]):
        x = ref_block(p["blocks"][i], x, heads, ws, bool(i % 2), unmasked)
    return x


def ref_expand(p, x, scale, out_dim):
    b, h, w, _ = x.shape
    x = ref_linear(p["expand"], x).reshape(b, h, w, scale, scale, out_dim)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * scale, w * scale, out_dim)
    return ref_layer_norm(p["norm"], x)


def ref_swin_unet(p, x, *, patch, embed, heads, ws, unmasked=False):
    """The whole network; ``unmasked=True`` leaves out the shifted-window mask (a
    deliberately wrong model, to show that the comparison can tell)."""
    x = jax.lax.conv_general_dilated(
        x, p["patch_embed"]["kernel"], (patch, patch), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["patch_embed"]["bias"]
    x = ref_layer_norm(p["patch_norm"], x)
    stages = len(heads)
    skips = []
    for i in range(stages):
        if i:
            x = jnp.concatenate(
                [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
            x = ref_linear(p["merges"][i - 1]["reduction"],
                           ref_layer_norm(p["merges"][i - 1]["norm"], x))
        skips.append(x)
        x = ref_stage(p["encoder"][i], x, heads[i], ws, unmasked)
    x = ref_layer_norm(p["norm"], x)
    skips.pop()
    for j, i in enumerate(range(stages - 2, -1, -1)):
        x = ref_expand(p["expands"][j], x, 2, embed * 2**i)
        x = ref_linear(p["concat_linears"][j], jnp.concatenate([x, skips.pop()], -1))
        x = ref_stage(p["decoder"][j], x, heads[i], ws, unmasked)
    x = ref_expand(p["final_expand"], ref_layer_norm(p["norm_up"], x), patch, embed)
    return x @ p["head"]["conv"]["kernel"][0, 0]


# --- Tests -----------------------------------------------------------------------------

# Tiny, but with everything switched on: 3 stages, several heads, shifted windows on
# non-square grids of 16x32 and 8x16 tokens (the 4x8 bottleneck is one window high and
# does not shift, as in the reference).
CONFIG = dict(patch_size=2, embed_dim=8, depths=(2, 2, 2), num_heads=(1, 2, 4),
              window_size=4, mlp_ratio=2.0, drop_path_rate=0.0)
INPUT_SHAPE = (2, 32, 64, 1)


def _randomise(model, key):
    # Initial LayerNorm scales are 1 and biases 0, which would hide a mix-up between
    # them; random values everywhere make every parameter matter.
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    leaves = [0.3 * jax.random.normal(k, x.shape, x.dtype) + (1.0 if x.ndim == 1 else 0.0)
              for k, x in zip(keys, leaves)]
    nnx.update(model, jax.tree.unflatten(treedef, leaves))


def _loss_weights(shape):
    return jax.random.normal(jax.random.key(3), shape[:-1] + (4,), jnp.float32)


@pytest.fixture(scope="module")
def model_and_reference():
    # Token chunks of 96 (not a power of two): several chunks per stage, and the
    # largest-divisor rule at work (1024 tokens at stage one -> chunks of 64).
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(swin_unet, "_CHUNK_TOKENS", 96)
        yield _model_and_reference()


def _model_objective():
    """The randomised test model's parameters, input and ``value_and_grad`` of the
    weighted logit sum (logits as aux); the backend and chunk size are read when it is
    traced."""
    model = models.create("swin_unet", rngs=nnx.Rngs(0), **CONFIG)
    _randomise(model, jax.random.key(1))
    model.eval()
    x = jax.random.normal(jax.random.key(2), INPUT_SHAPE, jnp.float32)
    weights = _loss_weights(INPUT_SHAPE)
    graphdef, params = nnx.split(model, nnx.Param)

    def objective(params, x):
        logits = nnx.merge(graphdef, params)(x)
        return jnp.sum(logits * weights), logits

    return params, x, weights, jax.value_and_grad(objective, argnums=(0, 1), has_aux=True)


def _model_and_reference():
    params, x, weights, grad_fn = _model_objective()
    (_, logits), (g_params, g_x) = jax.jit(grad_fn)(params, x)
    pure = nnx.to_pure_dict(params)

    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), pure)
        x64 = jnp.asarray(np.asarray(x), jnp.float64)
        w64 = jnp.asarray(np.asarray(weights), jnp.float64)
        kw = dict(patch=CONFIG["patch_size"], embed=CONFIG["embed_dim"],
                  heads=CONFIG["num_heads"], ws=CONFIG["window_size"])

        def ref_objective(p, x):
            logits = ref_swin_unet(p, x, **kw)
            return jnp.sum(logits * w64), logits

        (_, ref_logits), (ref_gp, ref_gx) = jax.jit(jax.value_and_grad(
            ref_objective, argnums=(0, 1), has_aux=True))(p64, x64)
        ref = jax.tree.map(np.asarray, (ref_logits, ref_gp, ref_gx))
    got = jax.tree.map(np.asarray, (logits, nnx.to_pure_dict(g_params), g_x))
    return got, ref


# float32 against float64: the largest error seen is about 1e-5 of the largest value.
RTOL = 5e-5


def _close(got, ref, what, rtol=RTOL):
    # Scale by the largest reference magnitude: entries near zero carry the rounding
    # of the large ones.
    err = np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-30)
    assert err < rtol, f"{what}: relative error {err:.2e}"


def test_logits_match_float64_reference(model_and_reference):
    (logits, _, _), (ref_logits, _, _) = model_and_reference
    assert logits.shape == INPUT_SHAPE[:-1] + (4,)
    assert np.std(ref_logits) > 0.1  # a real signal, not a degenerate network
    _close(logits, ref_logits, "logits")


def test_every_gradient_matches_float64_reference(model_and_reference):
    (_, g_params, g_x), (_, ref_gp, ref_gx) = model_and_reference
    _close(g_x, ref_gx, "input gradient")
    got = jax.tree_util.tree_leaves_with_path(g_params)
    ref = jax.tree.leaves(ref_gp)
    assert len(got) == len(ref) == len(jax.tree.leaves(
        nnx.state(models.create("swin_unet", rngs=nnx.Rngs(0), **CONFIG), nnx.Param)))
    for (path, g), r in zip(got, ref):
        assert g.shape == r.shape, path
        assert np.max(np.abs(r)) > 0, path
        _close(g, r, jax.tree_util.keystr(path))


def test_reference_detects_a_wrong_model(model_and_reference):
    # The comparison has teeth: the same network without the shifted-window mask is far
    # outside the tolerance.
    (logits, _, _), _ = model_and_reference
    model = models.create("swin_unet", rngs=nnx.Rngs(0), **CONFIG)
    _randomise(model, jax.random.key(1))
    pure = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    x = jax.random.normal(jax.random.key(2), INPUT_SHAPE, jnp.float32)
    wrong = jax.jit(lambda p, x: ref_swin_unet(
        p, x, patch=CONFIG["patch_size"], embed=CONFIG["embed_dim"],
        heads=CONFIG["num_heads"], ws=CONFIG["window_size"], unmasked=True))(pure, x)
    err = np.max(np.abs(np.asarray(wrong) - logits)) / np.max(np.abs(logits))
    assert err > 100 * RTOL


def test_off_the_cpu_the_mlp_runs_whole_and_matches_the_reference(model_and_reference, monkeypatch):
    # Token chunks under jax.checkpoint are a CPU measure: with another default backend
    # (read at trace time) the traced step holds no loop and no rematerialisation, and
    # computes the same logits and gradients.
    _, (ref_logits, ref_gp, ref_gx) = model_and_reference
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(swin_unet, "_CHUNK_TOKENS", 96)
    params, x, _, grad_fn = _model_objective()
    primitives = {e.primitive.name for e in jax.make_jaxpr(grad_fn)(params, x).eqns}
    assert not primitives & {"scan", "while", "remat", "checkpoint"}, primitives
    (_, logits), (g_params, g_x) = jax.jit(grad_fn)(params, x)
    _close(np.asarray(logits), ref_logits, "logits")
    _close(np.asarray(g_x), ref_gx, "input gradient")
    for g, r in zip(jax.tree.leaves(nnx.to_pure_dict(g_params)), jax.tree.leaves(ref_gp)):
        _close(np.asarray(g), r, "parameter gradient")
