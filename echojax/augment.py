"""On-device data augmentation, run inside the jitted train step.

Islam et al. (MELBA 2026, Section 4.4) augment on the fly with scaling, rotation,
Gaussian blur, brightness and contrast. Each transform is applied to each example
independently with its own probability, as in nnU-Net (Isensee et al., Nature Methods
2021), whose probabilities and ranges are the defaults here, except the rotation range:
apical views keep the apex at the top, so rotations stay small.

Order (nnU-Net's): spatial (scale and rotation about the image centre, one resampling),
then blur, brightness, contrast. Images resample bilinearly, labels with nearest
neighbour, so labels only take values present in the input; points that come from
outside the image are 0 (background, and the black outside the ultrasound cone).

``augment_batch`` is pure, has no value-dependent Python control flow (coin flips
select with ``jnp.where``) and static shapes (the blur kernel has a fixed width from
the largest sigma), so it compiles once per config and input shape.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

_RANGES = ("scale", "rotation_degrees", "blur_sigma", "brightness", "brightness_shift",
           "contrast")
_PROBS = ("scale_prob", "rotation_prob", "blur_prob", "brightness_prob", "contrast_prob")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Per-example augmentation probabilities and ranges (uniform draws in [lo, hi]).

    Attributes:
      scale_prob, scale: zoom factor (> 1 enlarges the content).
      rotation_prob, rotation_degrees: angle; positive turns the content
        counter-clockwise as displayed (90 degrees equals ``np.rot90``).
      blur_prob, blur_sigma: Gaussian blur sigma in pixels.
      brightness_prob, brightness, brightness_shift: ``x * factor + shift``
        (the shift in the images' units; 0 by default, as in nnU-Net).
      contrast_prob, contrast: ``(x - mean) * factor + mean``, clipped to the
        image's range before the change (nnU-Net's ``preserve_range``).
    """

    scale_prob: float = 0.2
    scale: tuple[float, float] = (0.7, 1.4)
    rotation_prob: float = 0.2
    rotation_degrees: tuple[float, float] = (-15.0, 15.0)
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_prob: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    brightness_shift: tuple[float, float] = (0.0, 0.0)
    contrast_prob: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)

    def __post_init__(self):
        for name in _PROBS:
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {p!r}")
            object.__setattr__(self, name, float(p))
        for name in _RANGES:
            r = getattr(self, name)
            try:
                lo, hi = (float(v) for v in r)
            except (TypeError, ValueError):
                raise ValueError(
                    f"AugmentConfig.{name} must be a (low, high) pair, got {r!r}") from None
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ValueError(f"AugmentConfig.{name} must be finite with low <= high, got {r!r}")
            object.__setattr__(self, name, (lo, hi))
        if self.scale[0] <= 0:
            raise ValueError(f"AugmentConfig.scale must be positive, got {self.scale}")
        if self.blur_sigma[0] <= 0:
            raise ValueError(f"AugmentConfig.blur_sigma must be positive, got {self.blur_sigma}")
        if self.brightness[0] < 0 or self.contrast[0] < 0:
            raise ValueError("AugmentConfig.brightness and contrast factors must be >= 0, got "
                             f"{self.brightness} and {self.contrast}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation (every probability 0)."""
        return cls(**{name: 0.0 for name in _PROBS})

    @property
    def blur_radius(self) -> int:
        """Half-width of the static blur kernel: 3 sigma of the largest sigma."""
        return max(1, math.ceil(3.0 * self.blur_sigma[1]))


def _uniform_where(key, coin_key, prob, bounds, identity, batch):
    """Per-example draw in ``bounds`` where a coin with ``prob`` comes up, else identity."""
    value = jax.random.uniform(key, (batch,), minval=bounds[0], maxval=bounds[1])
    apply = jax.random.uniform(coin_key, (batch,)) < prob
    return jnp.where(apply, value, identity)


def _affine_coords(scale, angle, h, w):
    """Input (row, col) sampled by each output pixel: f32[B, H, W] each.

    Output pixel p samples the input at c + M(angle) (p - c) / scale, c the centre,
    M = [[cos, sin], [-sin, cos]] in (row, col) coordinates.
    """
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    u = (jnp.arange(h, dtype=jnp.float32) - cy)[None, :, None]
    v = (jnp.arange(w, dtype=jnp.float32) - cx)[None, None, :]
    cos = (jnp.cos(angle) / scale)[:, None, None]
    sin = (jnp.sin(angle) / scale)[:, None, None]
    return cy + cos * u + sin * v, cx - sin * u + cos * v


def _pad_flat(x):
    """[B, H, W, C] -> [B, (H+2)*(W+2), C] with a zero border: clipping an index into
    the border reads 0, which is how points outside the image come out as 0."""
    b, h, w, c = x.shape
    return jnp.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]).reshape(b, (h + 2) * (w + 2), c)


def _gather(flat, rows, cols, h, w):
    """Values at integer (rows, cols) int32[B, H', W'] of a batch flattened by
    ``_pad_flat``: [B, H', W', C]; anything outside the image reads the zero border.

    A per-example gather (vmap: a gather with a batch dimension), so that with the
    batch sharded over devices each device gathers from its own examples only.
    """
    b, oh, ow = rows.shape
    idx = jnp.clip(rows + 1, 0, h + 1) * (w + 2) + jnp.clip(cols + 1, 0, w + 1)
    vals = jax.vmap(lambda f, i: f[i])(flat, idx.reshape(b, oh * ow))
    return vals.reshape(b, oh, ow, flat.shape[-1])


def _bilinear(images, y, x):
    b, h, w, c = images.shape
    flat = _pad_flat(images)
    # Points beyond the zero border read only the border (and stay in int range).
    y, x = jnp.clip(y, -1, h), jnp.clip(x, -1, w)
    y0, x0 = jnp.floor(y), jnp.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    top = _gather(flat, y0, x0, h, w) * (1 - wx) + _gather(flat, y0, x0 + 1, h, w) * wx
    bottom = _gather(flat, y0 + 1, x0, h, w) * (1 - wx) + _gather(flat, y0 + 1, x0 + 1, h, w) * wx
    return top * (1 - wy) + bottom * wy


def _nearest(labels, y, x):
    b, h, w = labels.shape
    rows = jnp.clip(jnp.floor(y + 0.5), -1, h).astype(jnp.int32)
    cols = jnp.clip(jnp.floor(x + 0.5), -1, w).astype(jnp.int32)
    return _gather(_pad_flat(labels[..., None]), rows, cols, h, w)[..., 0]


def _blur(images, sigma, radius):
    """Separable Gaussian blur, per-example sigma f32[B] (0 = no blur), edge padding
    (so a constant image stays constant)."""
    taps = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    safe = jnp.maximum(sigma, 1e-6)[:, None]
    weights = jnp.exp(-0.5 * (taps[None, :] / safe) ** 2)
    weights = weights / weights.sum(axis=1, keepdims=True)
    delta = (taps == 0).astype(jnp.float32)[None, :]
    weights = jnp.where((sigma > 0)[:, None], weights, delta)  # [B, K]
    k = 2 * radius + 1
    h, w = images.shape[1:3]
    pad = [(0, 0), (radius, radius), (radius, radius), (0, 0)]
    x = jnp.pad(images, pad, mode="edge")
    x = sum(weights[:, i, None, None, None] * x[:, i:i + h] for i in range(k))
    x = sum(weights[:, i, None, None, None] * x[:, :, i:i + w] for i in range(k))
    return x


def augment_batch(rng: jax.Array, images: jax.Array, labels: jax.Array,
                  cfg: AugmentConfig) -> tuple[jax.Array, jax.Array]:
    """Augments each example of a batch independently.

    Args:
      rng: PRNG key (fold the train step into it).
      images: f32[B, H, W, C].
      labels: int[B, H, W] class ids.
      cfg: static configuration (hashable; pass it as a static argument under jit).

    Returns:
      (images f32[B, H, W, C], labels int32[B, H, W]).
    """
    if images.ndim != 4 or labels.ndim != 3 or images.shape[:3] != labels.shape:
        raise ValueError(f"augment_batch expects images [B, H, W, C] and labels [B, H, W], got "
                         f"{images.shape} and {labels.shape}")
    b, h, w, _ = images.shape
    images = images.astype(jnp.float32)
    labels = labels.astype(jnp.int32)
    keys = jax.random.split(rng, 12)
    # A transform whose probability is 0 is left out of the graph (a branch on the
    # static config, not on values), so AugmentConfig.none() costs nothing.
    if cfg.scale_prob > 0 or cfg.rotation_prob > 0:
        scale = _uniform_where(keys[0], keys[1], cfg.scale_prob, cfg.scale, 1.0, b)
        degrees = _uniform_where(keys[2], keys[3], cfg.rotation_prob, cfg.rotation_degrees, 0.0, b)
        y, x = _affine_coords(scale, jnp.deg2rad(degrees), h, w)
        images = _bilinear(images, y, x)
        labels = _nearest(labels, y, x)

    if cfg.blur_prob > 0:
        sigma = _uniform_where(keys[4], keys[5], cfg.blur_prob, cfg.blur_sigma, 0.0, b)
        images = _blur(images, sigma, cfg.blur_radius)

    if cfg.brightness_prob > 0:
        coin = jax.random.uniform(keys[6], (b,)) < cfg.brightness_prob
        factor = jnp.where(coin, jax.random.uniform(keys[7], (b,), minval=cfg.brightness[0],
                                                    maxval=cfg.brightness[1]), 1.0)
        shift = jnp.where(coin, jax.random.uniform(keys[8], (b,), minval=cfg.brightness_shift[0],
                                                   maxval=cfg.brightness_shift[1]), 0.0)
        images = images * factor[:, None, None, None] + shift[:, None, None, None]

    if cfg.contrast_prob > 0:
        contrast = _uniform_where(keys[9], keys[10], cfg.contrast_prob, cfg.contrast, 1.0, b)
        # Reductions over one contiguous axis: several times faster on CPU than over
        # axes (1, 2, 3) of the 4-D array.
        flat = images.reshape(b, -1)
        mean = flat.mean(axis=1, keepdims=True)
        lo, hi = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
        contrasted = jnp.clip((flat - mean) * contrast[:, None] + mean, lo, hi)
        images = jnp.where((contrast != 1.0)[:, None], contrasted, flat).reshape(images.shape)
    return images, labels
