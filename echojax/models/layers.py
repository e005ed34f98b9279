"""Convolutional building blocks shared by the U-Net family (NHWC layout).

Every convolution of :mod:`echojax.models.unet` and :mod:`echojax.models.attention_unet`
goes through the small classes here. Each takes the layer implementation ``impl``
(one of :data:`IMPLS`: ``"flax"``, the plain Flax layers; ``"cpu"`` / ``"gpu"``, the
formulations of :mod:`echojax.ops`) as a constructor argument: it is static, part of
the module's graph definition, so every compiled program sees which one it traced.
Parameter names and shapes do not depend on it: checkpoints load into any
implementation.

Initialisation follows PyTorch's defaults for ``nn.Conv2d`` weights (uniform with
variance ``1 / (3 fan_in)``), so that the models start where the reference
implementations start; biases start at zero (PyTorch draws them uniformly) because a
BatchNorm follows almost every biased convolution and cancels them anyway.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from echojax import ops
from echojax.ops import conv as conv_ops

# PyTorch's default ``kaiming_uniform_(a=sqrt(5))`` for conv weights equals
# uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance 1/(3 fan_in).
TORCH_CONV_INIT = nnx.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

# PyTorch BatchNorm updates running stats with momentum 0.1, i.e. Flax momentum 0.9.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# The layer implementations (a model's ``impl``). Parameters are the same for all;
# only the computation differs (equal to float tolerance):
#   "flax": the plain Flax layers (nnx.Conv, nnx.ConvTranspose, nnx.BatchNorm,
#           nnx.max_pool, nnx.Linear, nnx.LayerNorm): the reference;
#   "cpu":  the formulations of echojax.ops that XLA:CPU runs fastest (Winograd / im2col
#           3x3 convolutions, fused training-mode BatchNorm, matmul transposed and 1x1
#           convolutions, strided max-pool; the Swin-UNet's dense layers, LayerNorm and
#           token chunks);
#   "gpu":  the echojax.ops formulations measured faster on a GPU too (transposed and
#           1x1 convolutions as matmuls, strided max-pool, the Swin-UNet's rearranged
#           dense layers and LayerNorm), XLA's own 3x3 convolution and BatchNorm, no
#           token chunks (bench/README.md, GPU section).
IMPLS: tuple[str, ...] = ("flax", "cpu", "gpu")


def check_impl(impl: str) -> str:
    """``impl`` if it is one of :data:`IMPLS`, else ``ValueError``."""
    if impl not in IMPLS:
        raise ValueError(f"unknown layer implementation {impl!r}; expected one of {IMPLS}")
    return impl


def resolve_impl(impl: str = "auto") -> str:
    """``impl`` itself if it is one of :data:`IMPLS`; ``"auto"``: the fastest for JAX's
    default backend, i.e. the backend this process computes on:

    * CPU: ``"cpu"`` (measured: 1.10-1.11x PyTorch's best layout for the paper-size
      U-Nets, against 0.27x for ``"flax"``; bench/README.md, "Quiet-machine run");
    * GPU: ``"gpu"``. Measured on one H100, float32, 256x256, batch 32 (bench/README.md,
      "GPU"): these formulations gave the U-Net step 58.7 ms against 74.8 ms with the
      plain Flax layers, and the Attention U-Net 86.3 vs 85.8 ms (equal within noise).
      That run predates the 1x1-convolution matmuls and the Swin-UNet reformulations,
      and bfloat16 was not measured: for those, and for the Swin-UNet, ``"gpu"`` is our
      choice, unmeasured (XLA's own 3x3 convolution and BatchNorm, the layers cuDNN
      runs, with the matmul forms that won on the U-Net);
    * any other backend (TPU, ...): ``"gpu"``, our choice, unmeasured (XLA-native
      convolutions and normalisation; the CPU-only formulations are kept off it).

    Asking for the backend starts it: call this once, when a run is configured (after
    ``jax.distributed.initialize`` in a multi-process run), never at import, and record
    the result (``echojax.config.ModelConfig`` does both).
    """
    if impl == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "gpu"
    if impl not in IMPLS:
        raise ValueError(
            f"unknown layer implementation {impl!r}; expected 'auto' or one of {IMPLS}")
    return impl


def _operands(conv: nnx.Conv | nnx.ConvTranspose, x: jax.Array):
    """``(x, kernel, bias)`` promoted to the layer's compute dtype, as the layer does."""
    bias = conv.bias[...] if conv.bias is not None else None
    return conv.promote_dtype((x, conv.kernel[...], bias), dtype=conv.dtype)


def _conv_same(conv: nnx.Conv, x: jax.Array, impl: str) -> jax.Array:
    """``conv(x)`` for a stride-1 'SAME' ``nnx.Conv``; ``"cpu"``: through
    ``echojax.ops.conv_same`` (the method chosen by the shapes)."""
    if impl != "cpu":
        return conv(x)
    x, kernel, bias = _operands(conv, x)
    y = ops.conv_same(x, kernel)
    return y if bias is None else y + bias


def apply_batch_norm(norm: nnx.BatchNorm, x: jax.Array, *, relu: bool = False,
                     impl: str) -> jax.Array:
    """``norm(x)`` (then ReLU if ``relu``), with the same parameters, statistics and
    running-average updates as ``nnx.BatchNorm``. With ``impl="cpu"``, in training mode
    in float32 it goes through ``echojax.ops.batch_norm_train`` (one fused pass per
    direction and a hand-written VJP; the plain form costs XLA:CPU several passes over
    the map); in every other case it is ``norm(x)`` itself."""
    if (impl != "cpu" or norm.use_running_average
            or norm.scale is None or norm.bias is None or norm.axis_name is not None
            or not norm.use_fast_variance or norm.axis not in (-1, x.ndim - 1)):
        y = norm(x)
        return jax.nn.relu(y) if relu else y
    x, scale, bias = norm.promote_dtype((x, norm.scale[...], norm.bias[...]), dtype=norm.dtype)
    if x.dtype != jnp.float32:
        y = norm(x)
        return jax.nn.relu(y) if relu else y
    # The statistics and the normalisation both read x: without the barrier XLA:CPU fuses
    # a Winograd convolution's output transform into both and computes it twice (the
    # U-Net 128x128 step measured 1.07-1.29x faster with it, bench/README.md).
    x = jax.lax.optimization_barrier(x)
    y, mean, var = ops.batch_norm_train(x, scale, bias, norm.epsilon, relu)
    m = norm.momentum
    norm.mean[...] = jax.lax.stop_gradient(m * norm.mean[...] + (1 - m) * mean)
    norm.var[...] = jax.lax.stop_gradient(m * norm.var[...] + (1 - m) * var)
    return y


def batch_norm(num_features: int, *, dtype, param_dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """BatchNorm with PyTorch's momentum and epsilon; trainable scale and bias."""
    return nnx.BatchNorm(
        num_features,
        momentum=BN_MOMENTUM,
        epsilon=BN_EPSILON,
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class ConvBNReLU(nnx.Module):
    """``k x k`` convolution (stride 1, 'SAME' padding), BatchNorm, ReLU.

    ``x: [B, H, W, in_features] -> [B, H, W, out_features]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        kernel_size: int = 3,
        use_bias: bool = False,
        dtype=None,
        param_dtype=jnp.float32,
        impl: str = "flax",
        rngs: nnx.Rngs,
    ):
        self.impl = check_impl(impl)
        self.conv = nnx.Conv(
            in_features,
            out_features,
            kernel_size=(kernel_size, kernel_size),
            padding="SAME",
            use_bias=use_bias,
            kernel_init=TORCH_CONV_INIT,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.norm = batch_norm(out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return apply_batch_norm(self.norm, _conv_same(self.conv, x, self.impl), relu=True,
                                impl=self.impl)


class DoubleConv(nnx.Module):
    """(conv3x3 - BN - ReLU) twice: the U-Net level block (Ronneberger et al., 2015).

    ``use_bias=False`` matches milesial/Pytorch-UNet (a bias before BatchNorm is
    redundant); ``use_bias=True`` matches the ``conv_block`` of the Attention U-Net
    reference implementation. ``x: [B, H, W, in_features] -> [B, H, W, out_features]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = False,
        dtype=None,
        param_dtype=jnp.float32,
        impl: str = "flax",
        rngs: nnx.Rngs,
    ):
        self.impl = check_impl(impl)
        kw = dict(use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, impl=impl, rngs=rngs)
        self.block1 = ConvBNReLU(in_features, out_features, **kw)
        self.block2 = ConvBNReLU(out_features, out_features, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.block2(self.block1(x))


class TransposedConv2x2(nnx.Module):
    """2x2 transposed convolution with stride 2 (doubles H and W), with bias.

    Each input pixel writes an independent 2x2 output patch, so this is a per-pixel
    linear map ``in -> 4 * out`` followed by depth-to-space; the kernel is stored as
    ``[2, 2, in_features, out_features]`` whatever the implementation.
    ``x: [B, H, W, in_features] -> [B, 2H, 2W, out_features]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        impl: str = "flax",
        rngs: nnx.Rngs,
    ):
        self.impl = check_impl(impl)
        self.conv = nnx.ConvTranspose(
            in_features,
            out_features,
            kernel_size=(2, 2),
            strides=(2, 2),
            padding="VALID",
            use_bias=True,
            kernel_init=TORCH_CONV_INIT,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl == "flax":
            return self.conv(x)
        return ops.conv_transpose_2x2(*_operands(self.conv, x))


class UpsampleConv(nnx.Module):
    """Nearest-neighbour 2x up-sampling, then conv3x3 - BN - ReLU (with conv bias).

    The ``up_conv`` of the Attention U-Net reference (``nn.Upsample(scale_factor=2)``
    defaults to nearest). ``x: [B, H, W, in_features] -> [B, 2H, 2W, out_features]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dtype=None,
        param_dtype=jnp.float32,
        impl: str = "flax",
        rngs: nnx.Rngs,
    ):
        self.impl = check_impl(impl)
        self.block = ConvBNReLU(
            in_features, out_features, use_bias=True, dtype=dtype, param_dtype=param_dtype,
            impl=impl, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        full = (b, 2 * h, 2 * w, c)
        if self.impl != "cpu" or conv_ops.auto_method(full, self.block.conv.kernel.shape) != "xla":
            return self.block(upsample_nearest_2x(x))
        # "cpu", where the full-resolution layer would be a narrow one on XLA's direct
        # convolution (conv_ops.auto_method): the convolution at the low resolution
        # (``ops.conv_same_upsampled``: C -> 4 O with the sub-pixel kernel, a shape
        # Winograd serves), BatchNorm and ReLU on its four output phases (the same
        # values, so the same batch statistics), then depth-to-space. Measured 1.05-1.08x
        # on the cpu-preset Attention U-Net step at 128x128; on the wider layers (every
        # level of the paper-size model) the sub-pixel kernel's zeros cost more than the
        # smaller map saves (0.96x there), so those keep the full-resolution form
        # (bench/README.md, 2026-12-08).
        xc, kernel, bias = _operands(self.block.conv, x)
        y = ops.conv_same_upsampled(xc, kernel, phases=True)          # [B, H, W, 2, 2, O]
        if bias is not None:
            y = y + bias
        y = apply_batch_norm(self.block.norm, y, relu=True, impl=self.impl)
        return ops.depth_to_space_2x(y)


class Conv1x1(nnx.Module):
    """Pointwise convolution (a per-pixel linear map), e.g. the segmentation head.

    ``x: [B, H, W, in_features] -> [B, H, W, out_features]``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype=None,
        param_dtype=jnp.float32,
        impl: str = "flax",
        rngs: nnx.Rngs,
    ):
        self.impl = check_impl(impl)
        self.conv = nnx.Conv(
            in_features,
            out_features,
            kernel_size=(1, 1),
            use_bias=use_bias,
            kernel_init=TORCH_CONV_INIT,
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.impl == "flax":
            return self.conv(x)
        return ops.conv_1x1(*_operands(self.conv, x))


def max_pool_2x2(x: jax.Array, *, impl: str) -> jax.Array:
    """2x2 max pooling with stride 2: ``[B, H, W, C] -> [B, H/2, W/2, C]`` (H, W even)."""
    if impl != "flax":
        return ops.max_pool_2x2(x)
    return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2), padding="VALID")


def upsample_nearest_2x(x: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x up-sampling: ``[B, H, W, C] -> [B, 2H, 2W, C]``."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def check_spatial(shape: tuple[int, ...], *, in_channels: int, multiple: int, model: str) -> None:
    """Raises ``ValueError`` unless ``shape`` is ``[B, H, W, in_channels]`` with H and W
    positive multiples of ``multiple`` (a static check: shapes are known under jit)."""
    if len(shape) != 4 or shape[-1] != in_channels:
        raise ValueError(
            f"{model}: expected input of shape [B, H, W, {in_channels}], got {tuple(shape)}"
        )
    h, w = shape[1], shape[2]
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        raise ValueError(
            f"{model}: input height and width must be positive multiples of {multiple}, "
            f"got {h}x{w}"
        )


def logits_dtype(x: jax.Array):
    """The dtype models return logits in: float32, or float64 for a float64 computation
    (the float64 reference runs of the tests)."""
    return jnp.promote_types(x.dtype, jnp.float32)
