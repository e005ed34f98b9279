"""Segmentation architectures compared in Islam et al. (MELBA 2026),
chosen by name.

All map ``x f32[B, H, W, in_channels]`` to logits ``f32[B, H, W, num_classes]``;
``model.train()`` / ``model.eval()`` switch BatchNorm statistics and dropout/drop path.

>>> from flax import nnx
>>> model = create("unet", rngs=nnx.Rngs(0), **PRESETS["unet"]["tiny"])  # impl="auto"

``impl`` chooses how the layers are computed (:data:`IMPLS`): ``"flax"``, the plain Flax
layers (the reference); ``"cpu"``, the formulations of :mod:`echojax.ops` that XLA:CPU
runs fastest; ``"gpu"``, those of them measured faster on a GPU too. The default,
``"auto"``, is the fastest for the backend in use (:func:`resolve_impl`: ``"cpu"`` on a
CPU, ``"gpu"`` elsewhere). The parameters (names, shapes, initial values) are the same
for all three, so a checkpoint written with one loads into the others and predicts the
same masks.

Presets (constructor overrides):

* ``"tiny"``: a few thousand parameters, for unit tests;
* ``"cpu"``: small models for quick experiments on a CPU at 64x64-128x128;
* ``"paper"``: the reference sizes (U-Net 31,036,676, Attention U-Net 34,877,616,
  Swin-UNet 27,172,740 trainable parameters with one input channel and four classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from flax import nnx

from echojax.models.attention_unet import AttentionGate, AttentionUNet
from echojax.models.layers import IMPLS, resolve_impl
from echojax.models.swin_unet import SwinUNet
from echojax.models.unet import UNet

_CLASSES: Mapping[str, type[nnx.Module]] = MappingProxyType(
    {"unet": UNet, "attention_unet": AttentionUNet, "swin_unet": SwinUNet}
)
ARCHITECTURES: tuple[str, ...] = tuple(_CLASSES)

_PAPER_WIDTHS = (64, 128, 256, 512, 1024)

PRESETS: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType({
    "unet": MappingProxyType({
        "tiny": MappingProxyType({"widths": (4, 8, 16)}),
        "cpu": MappingProxyType({"widths": (16, 32, 64, 128, 256)}),
        "paper": MappingProxyType({"widths": _PAPER_WIDTHS}),
    }),
    "attention_unet": MappingProxyType({
        "tiny": MappingProxyType({"widths": (4, 8, 16)}),
        "cpu": MappingProxyType({"widths": (16, 32, 64, 128, 256)}),
        "paper": MappingProxyType({"widths": _PAPER_WIDTHS}),
    }),
    "swin_unet": MappingProxyType({
        # Inputs: multiples of 16 (tiny), 64 (cpu), 256 (paper).
        "tiny": MappingProxyType({
            "patch_size": 2, "embed_dim": 8, "depths": (2, 2), "num_heads": (1, 2),
            "window_size": 4, "mlp_ratio": 2.0, "drop_path_rate": 0.0,
        }),
        "cpu": MappingProxyType({
            "patch_size": 4, "embed_dim": 32, "depths": (2, 2, 2), "num_heads": (1, 2, 4),
            "window_size": 4, "mlp_ratio": 4.0, "drop_path_rate": 0.1,
        }),
        "paper": MappingProxyType({
            "patch_size": 4, "embed_dim": 96, "depths": (2, 2, 2, 2),
            "num_heads": (3, 6, 12, 24), "window_size": 8, "mlp_ratio": 4.0,
            "drop_path_rate": 0.1,
        }),
    }),
})


def create(
    name: str, *, num_classes: int = 4, in_channels: int = 1, impl: str = "auto",
    rngs: nnx.Rngs, **overrides
) -> nnx.Module:
    """Builds architecture ``name`` (one of :data:`ARCHITECTURES`) with layer
    implementation ``impl``: one of :data:`IMPLS`, or ``"auto"`` (the default), the
    fastest for JAX's default backend (:func:`resolve_impl`; it starts the backend).
    The model's ``impl`` attribute holds the concrete name.

    ``overrides`` are constructor keywords (e.g. ``**PRESETS[name]["cpu"]``, ``dtype``);
    without them the model has the reference ("paper") size.
    """
    if name not in _CLASSES:
        raise ValueError(f"unknown architecture {name!r}; expected one of {ARCHITECTURES}")
    return _CLASSES[name](in_channels, num_classes, impl=resolve_impl(impl), rngs=rngs,
                          **overrides)


__all__ = [
    "ARCHITECTURES",
    "IMPLS",
    "PRESETS",
    "AttentionGate",
    "AttentionUNet",
    "SwinUNet",
    "UNet",
    "create",
    "resolve_impl",
]
