"""Segmentation losses for partially labelled data, and label dropout.

Every loss takes ``logits: f32[B, H, W, C]``, ``labels: int[B, H, W]`` and
``label_mask: bool[B, C]`` (True where class ``c`` is annotated in example ``b``;
pixels of an unannotated class carry 0, see ``echojax.labels``) and returns the mean
over all ``B * H * W`` pixels. Each loss also owns its decision rule, ``predict``.

All arithmetic is in log space (``logsumexp``, ``log_sigmoid``), so logits of
magnitude 1e4 give finite values and finite gradients, and nothing branches in Python
on array values: the losses are safe under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.

Pixels whose label cannot be scored give NaN rather than being dropped, so a data bug
shows up in the loss instead of being trained on silently:

- a label outside ``0 .. C-1`` (every loss);
- a label whose class ``label_mask`` marks as unannotated (the masked losses: acce,
  marginal, abce), which contradicts the label contract.

The losses compared by Islam et al., "Comparison of Loss Functions for Robust Deep
Learning-based Echocardiography Segmentation when Learning with Partially Labelled
Data from Multiple Domains", MELBA 2026, Section 4.5:

=========  ======================================================================
name       per-pixel loss
=========  ======================================================================
cce        ``lse(z) - z_y``
acce       ``lse_{c in A}(z_c) - z_y``, A = annotated classes
marginal   ``lse(z) - lse_{c in M}(z_c)`` if ``y == 0``, else ``lse(z) - z_y``;
           M = {0} ∪ unannotated classes
abce       ``sum_{c >= 1, c in A} BCE(sigmoid(z_c), [y == c])``
=========  ======================================================================

``lse`` is log-sum-exp over the class axis.

>>> import jax.numpy as jnp
>>> from echojax import losses
>>> logits = jnp.zeros((2, 8, 8, 4))
>>> labels = jnp.zeros((2, 8, 8), jnp.int32)
>>> label_mask = jnp.array([[True, True, True, True], [True, True, False, False]])
>>> float(losses.LOSSES["acce"](logits, labels, label_mask))  # (log 4 + log 2) / 2
1.0397207736968994
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import jax
import jax.numpy as jnp
import numpy as np

from echojax import labels as labels_lib

Array = jax.Array


def _check(logits, labels, label_mask=None, *, where: str) -> None:
    """Static shape and dtype checks; raises ValueError naming the offending input."""
    if jnp.ndim(logits) != 4:
        raise ValueError(
            f"{where}: logits must be f32[B, H, W, C], got shape {jnp.shape(logits)}")
    if not jnp.issubdtype(jnp.result_type(logits), jnp.floating):
        raise ValueError(f"{where}: logits must be floating, got {jnp.result_type(logits)}")
    b, h, w, c = jnp.shape(logits)
    if c < 2:
        raise ValueError(f"{where}: logits need at least 2 classes, got shape {(b, h, w, c)}")
    if labels is None:
        return
    if jnp.shape(labels) != (b, h, w):
        raise ValueError(
            f"{where}: labels must be int[B, H, W] = int{[b, h, w]} to match logits "
            f"{[b, h, w, c]}, got shape {list(jnp.shape(labels))}")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(f"{where}: labels must be an integer array, got {jnp.result_type(labels)}")
    if label_mask is None:
        return
    if jnp.shape(label_mask) != (b, c):
        raise ValueError(
            f"{where}: label_mask must be bool[B, C] = bool{[b, c]} to match logits "
            f"{[b, h, w, c]}, got shape {list(jnp.shape(label_mask))}")
    if jnp.result_type(label_mask) != jnp.bool_:
        raise ValueError(f"{where}: label_mask must be bool, got {jnp.result_type(label_mask)}")


def _upcast(logits: Array) -> Array:
    # bf16/f16 logits lose the small differences the log-space formulas rely on.
    logits = jnp.asarray(logits)
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))


def _masked_logsumexp(logits: Array, where: Array) -> Array:
    """``log sum_{c: where[c]} exp(z_c)`` over the last axis.

    ``logsumexp(where=)`` selects the kept entries before exponentiating, so an
    excluded logit far above the kept ones neither overflows the value nor leaks
    into the gradient (pinned by the 1e4-logit tests).
    """
    return jax.nn.logsumexp(logits, axis=-1, where=where)


def _label_logit(logits: Array, labels: Array) -> tuple[Array, Array]:
    """``(z_y, valid)``: the logit of each pixel's label, and whether y is in 0..C-1."""
    onehot = labels[..., None] == jnp.arange(logits.shape[-1])
    z_y = jnp.sum(jnp.where(onehot, logits, 0.0), axis=-1)
    return z_y, jnp.any(onehot, axis=-1)


def _label_annotated(labels: Array, label_mask: Array) -> Array:
    """``label_mask[b, labels[b, h, w]]``, False for labels outside 0..C-1."""
    onehot = labels[..., None] == jnp.arange(label_mask.shape[-1])
    return jnp.any(onehot & label_mask[:, None, None, :], axis=-1)


def cce_per_pixel(logits: Array, labels: Array, label_mask: Array | None = None) -> Array:
    r"""Categorical cross entropy per pixel; ignores ``label_mask`` (the baseline).

    .. math::
        \ell = -\log \mathrm{softmax}(z)_y = \log \sum_c e^{z_c} - z_y

    Unannotated structures are labelled background in partial masks, so this loss
    teaches the model that they are background: the naive baseline of Islam et al.,
    MELBA 2026.

    Args:
      logits: ``f32[B, H, W, C]``.
      labels: ``int[B, H, W]`` in ``0 .. C-1`` (other values give NaN).
      label_mask: ``bool[B, C]`` or None; checked for shape, otherwise unused.

    Returns:
      ``f32[B, H, W]`` per-pixel loss.
    """
    _check(logits, labels, label_mask, where="cce")
    z = _upcast(logits)
    z_y, valid = _label_logit(z, labels)
    return jnp.where(valid, jax.nn.logsumexp(z, axis=-1) - z_y, jnp.nan)


def acce_per_pixel(logits: Array, labels: Array, label_mask: Array) -> Array:
    r"""Adaptive cross entropy per pixel: the softmax over annotated classes only.

    .. math::
        \ell = -\log \frac{e^{z_y}}{\sum_{c \in A} e^{z_c}}
             = \log \sum_{c \in A} e^{z_c} - z_y,
        \qquad A = \{c : \mathrm{label\_mask}[c]\}

    The logits of unannotated classes get exactly zero gradient, so the model is
    neither pushed towards nor away from them where they were not labelled. With
    every class annotated this is :func:`cce_per_pixel`, bit for bit.

    Why the masked softmax: the loss as printed (Islam et al., MELBA 2026, Eq. 2)
    keeps the full softmax denominator and only zeroes the one-hot targets of absent
    classes; since those targets are zero anyway, read literally it equals CCE. The
    paper's description (Section 6.1: "the predicted segmentations for these labels
    are not considered during training") and Mariscal-Harana et al.'s formulation
    drop the absent classes from the prediction, which is this masked softmax.

    Reference: Mariscal-Harana et al., 2023 (adaptive cross entropy for partially
    labelled cardiac segmentation), as used by Islam et al., MELBA 2026, Eq. 2.

    Args:
      logits: ``f32[B, H, W, C]``.
      labels: ``int[B, H, W]``; a pixel labelled with an unannotated class gives NaN.
      label_mask: ``bool[B, C]``.

    Returns:
      ``f32[B, H, W]`` per-pixel loss.
    """
    _check(logits, labels, label_mask, where="acce")
    z = _upcast(logits)
    z_y, _ = _label_logit(z, labels)
    loss = _masked_logsumexp(z, label_mask[:, None, None, :]) - z_y
    return jnp.where(_label_annotated(labels, label_mask), loss, jnp.nan)


def marginal_per_pixel(logits: Array, labels: Array, label_mask: Array) -> Array:
    r"""Marginal cross entropy per pixel: background merged with unannotated classes.

    .. math::
        \ell = -\log \sum_{c \in M} p_c \;\; (y = 0), \qquad
        \ell = -\log p_y \;\; (y \ne 0),

        p = \mathrm{softmax}(z), \qquad M = \{0\} \cup \{c : \neg\mathrm{label\_mask}[c]\}

    computed as ``lse(z) - lse_{c in M}(z_c)`` for background pixels. A pixel labelled
    0 may be background or any structure that was not annotated, so the loss rewards
    the total *probability* of that set, as the equations state (Islam et al., MELBA
    2026, Eq. 3-4; Shi et al.). The public nnU-Net-based code of Shi et al. sums the
    logits instead, which is not a marginal probability. With every class annotated
    this is :func:`cce_per_pixel`, bit for bit.

    Reference: Shi et al., "Marginal loss and exclusion loss for partially
    supervised multi-organ segmentation", Medical Image Analysis, 2021.

    Args:
      logits: ``f32[B, H, W, C]``.
      labels: ``int[B, H, W]``; a pixel labelled with an unannotated class gives NaN.
      label_mask: ``bool[B, C]``.

    Returns:
      ``f32[B, H, W]`` per-pixel loss.
    """
    _check(logits, labels, label_mask, where="marginal")
    z = _upcast(logits)
    z_y, _ = _label_logit(z, labels)
    merged = (~label_mask).at[:, 0].set(True)
    lse_merged = _masked_logsumexp(z, merged[:, None, None, :])
    loss = jax.nn.logsumexp(z, axis=-1) - jnp.where(labels == 0, lse_merged, z_y)
    return jnp.where(_label_annotated(labels, label_mask), loss, jnp.nan)


def abce_per_pixel(logits: Array, labels: Array, label_mask: Array) -> Array:
    r"""Adaptive binary cross entropy per pixel: one sigmoid per annotated structure.

    .. math::
        \ell = \sum_{c \ge 1,\, \mathrm{label\_mask}[c]}
               -\big[t_c \log\sigma(z_c) + (1 - t_c)\log\sigma(-z_c)\big],
        \qquad t_c = [y = c]

    Channel 0 (background) is not trained: its gradient is exactly zero, as is the
    gradient of every unannotated class. The mean of this over pixels equals the
    sum over annotated classes of each class's pixel-mean BCE (Islam et al., MELBA
    2026, Eq. 5). Decide with :func:`abce_predict`, not argmax over all channels.

    Reference: Petit et al., "Handling missing annotations for semantic
    segmentation with deep convnets", DLMIA 2018.

    Args:
      logits: ``f32[B, H, W, C]``.
      labels: ``int[B, H, W]``; a pixel labelled with an unannotated class gives NaN.
      label_mask: ``bool[B, C]``.

    Returns:
      ``f32[B, H, W]`` per-pixel loss.
    """
    _check(logits, labels, label_mask, where="abce")
    z = _upcast(logits)[..., 1:]
    classes = jnp.arange(1, logits.shape[-1])
    target = labels[..., None] == classes
    bce = -jnp.where(target, jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z))
    trained = label_mask[:, None, None, 1:]
    loss = jnp.sum(jnp.where(trained, bce, 0.0), axis=-1)
    return jnp.where(_label_annotated(labels, label_mask), loss, jnp.nan)


def argmax_predict(logits: Array) -> Array:
    """``int32[B, H, W]``: the class with the largest logit (softmax losses)."""
    _check(logits, None, where="predict")
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def abce_predict(logits: Array) -> Array:
    """``int32[B, H, W]``: argmax over ``[0, z_1, ..., z_{C-1}]`` (aBCE's default rule).

    Background unless some structure's sigmoid exceeds 0.5, then the structure with
    the largest logit. Channel 0 is untrained under aBCE and is ignored. The other
    rule, ``abce_inference="softmax"`` (:func:`get`), is :func:`argmax_predict`.
    """
    _check(logits, None, where="predict")
    z = jnp.asarray(logits)
    scores = jnp.concatenate([jnp.zeros_like(z[..., :1]), z[..., 1:]], axis=-1)
    return jnp.argmax(scores, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Loss:
    """A named segmentation loss with its decision rule.

    ``loss(logits, labels, label_mask) -> f32[]`` is the mean of ``per_pixel`` over
    all ``B * H * W`` pixels; ``loss.predict(logits) -> int32[B, H, W]``. Instances are
    hashable, so they can be static arguments of ``jax.jit``.
    """

    name: str
    per_pixel: Callable[[Array, Array, Array], Array]
    decide: Callable[[Array], Array]

    def __call__(self, logits: Array, labels: Array, label_mask: Array) -> Array:
        return jnp.mean(self.per_pixel(logits, labels, label_mask))

    def predict(self, logits: Array) -> Array:
        return self.decide(logits)


CCE = Loss("cce", cce_per_pixel, argmax_predict)
ACCE = Loss("acce", acce_per_pixel, argmax_predict)
MARGINAL = Loss("marginal", marginal_per_pixel, argmax_predict)
ABCE = Loss("abce", abce_per_pixel, abce_predict)

LOSSES: Mapping[str, Loss] = MappingProxyType(
    {loss.name: loss for loss in (CCE, ACCE, MARGINAL, ABCE)})

# aBCE's decision rules at inference (``LossConfig.abce_inference``):
#   "sigmoid": abce_predict, background unless a structure's sigmoid exceeds 0.5;
#   "softmax": argmax over all C logits as the network outputs them, channel 0
#              included (Islam et al., MELBA 2026, Sec. 6.1: aBCE "uses the Softmax
#              during inference"). aBCE never trains channel 0 (Eq. 5 sums c >= 1),
#              so under this rule background is decided by an untrained logit.
ABCE_INFERENCE_RULES: tuple[str, ...] = ("sigmoid", "softmax")
ABCE_SOFTMAX = dataclasses.replace(ABCE, decide=argmax_predict)


def get(name: str, *, abce_inference: str = "sigmoid") -> Loss:
    """The loss ``name`` with its decision rule; for ``abce``, the rule
    ``abce_inference`` (one of :data:`ABCE_INFERENCE_RULES`). The training loss is the
    same whatever the rule; :func:`from_config` reads both from a ``LossConfig``.

    Raises:
      ValueError: unknown ``name`` or rule, or a non-default rule for a loss other
        than ``abce`` (the softmax losses have one rule, argmax).
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    if abce_inference not in ABCE_INFERENCE_RULES:
        raise ValueError(f"abce_inference must be one of {ABCE_INFERENCE_RULES}, "
                         f"got {abce_inference!r}")
    if abce_inference == "softmax":
        if name != "abce":
            raise ValueError(f"abce_inference='softmax' applies to loss 'abce' only, "
                             f"got loss {name!r}")
        return ABCE_SOFTMAX
    return LOSSES[name]


def from_config(loss_config) -> Loss:
    """The :class:`Loss` of an ``echojax.config.LossConfig``, with its configured
    decision rule: what evaluation and inference predict with."""
    return get(loss_config.name, abce_inference=loss_config.abce_inference)


def label_dropout(
    rng: Array,
    labels: Array,
    label_mask: Array,
    *,
    rate: float | Array,
    classes: Iterable[str | int],
) -> tuple[Array, Array]:
    """Randomly un-annotates classes, per example, to simulate partial labels.

    For every example ``b`` and every class ``c`` in ``classes`` with
    ``label_mask[b, c]`` True, independently with probability ``rate``: the pixels
    of ``c`` become 0 (background) and ``label_mask[b, c]`` becomes False. Classes
    not in ``classes`` never change. Used on the fly inside the jitted train step.

    Reference: label dropout, Islam et al., 2024; used in Islam et al., MELBA 2026,
    Sec. 5.3.1 (Experiment 3 sweeps ``rate`` from 0 to 1).

    Args:
      rng: a PRNG key.
      labels: ``int[B, ...]`` class ids (e.g. ``[B, H, W]``).
      label_mask: ``bool[B, C]``.
      rate: drop probability in [0, 1]; may be a traced scalar (values outside
        [0, 1] cannot be checked then, and act as 0 or 1).
      classes: static names or ids (see ``echojax.labels.class_ids``) of the
        classes that may be dropped; background may not be listed.

    Returns:
      ``(labels, label_mask)`` with the same shapes and dtypes.

    >>> import jax, jax.numpy as jnp
    >>> y = jnp.array([[[0, 1, 2]]]); m = jnp.array([[True, True, True, False]])
    >>> y2, m2 = label_dropout(jax.random.key(0), y, m, rate=1.0, classes=("lvm",))
    >>> y2.tolist(), m2.tolist()
    ([[[0, 1, 0]]], [[True, True, False, False]])
    """
    ids = labels_lib.class_ids(classes)
    if labels_lib.BACKGROUND in ids:
        raise ValueError(f"label_dropout: background cannot be dropped, got classes={classes!r}")
    if jnp.ndim(label_mask) != 2 or jnp.result_type(label_mask) != jnp.bool_:
        raise ValueError(
            f"label_dropout: label_mask must be bool[B, C], got "
            f"{jnp.result_type(label_mask)}{list(jnp.shape(label_mask))}")
    b, c = jnp.shape(label_mask)
    if jnp.ndim(labels) < 1 or jnp.shape(labels)[0] != b:
        raise ValueError(
            f"label_dropout: labels must be int[B, ...] with B={b} from label_mask "
            f"{[b, c]}, got shape {list(jnp.shape(labels))}")
    if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
        raise ValueError(
            f"label_dropout: labels must be an integer array, got {jnp.result_type(labels)}")
    if ids and max(ids) >= c:
        raise ValueError(f"label_dropout: classes {ids} outside label_mask's {c} classes")
    if not isinstance(rate, jax.core.Tracer):
        r = float(rate)
        if not 0.0 <= r <= 1.0:
            raise ValueError(f"label_dropout: rate must be in [0, 1], got {rate}")

    listed = np.isin(np.arange(c), ids)  # static
    # One draw per (example, class) for every class, so the draw for a listed class
    # does not depend on which other classes are listed.
    coin = jax.random.bernoulli(rng, rate, (b, c))
    drop = coin & listed & label_mask
    labels = jnp.asarray(labels)
    onehot = labels[..., None] == jnp.arange(c)
    dropped_px = jnp.any(onehot & drop.reshape((b,) + (1,) * (labels.ndim - 1) + (c,)), -1)
    return jnp.where(dropped_px, jnp.zeros_like(labels), labels), label_mask & ~drop
