"""The CPU (and GPU) formulations behind the models' ``impl="cpu"`` / ``"gpu"``: same
maps and parameter layouts as the Flax layers they replace, computed in forms XLA runs
faster (``bench/README.md`` has the measurements)."""

from echojax.ops.attention import additive_mask, gather_rows_by_matmul
from echojax.ops.conv import (
    conv_1x1,
    conv_same,
    conv_same_im2col,
    conv_same_upsampled,
    conv_same_xla,
    conv_transpose_2x2,
    depth_to_space_2x,
    subpixel_kernel,
)
from echojax.ops.dense import (
    CHUNK_TOKENS,
    dense,
    fold_affine,
    gelu,
    matmul,
    mlp,
    token_chunks,
)
from echojax.ops.layer_norm import expand_norm_project, layer_norm, normalize
from echojax.ops.norm import batch_norm_train
from echojax.ops.pool import max_pool_2x2
from echojax.ops.winograd import conv_same_winograd, conv_same_winograd4

__all__ = [
    "CHUNK_TOKENS", "additive_mask", "batch_norm_train", "conv_1x1", "conv_same",
    "conv_same_im2col", "conv_same_upsampled", "conv_same_winograd",
    "conv_same_winograd4", "conv_same_xla", "conv_transpose_2x2", "dense",
    "depth_to_space_2x", "expand_norm_project", "fold_affine", "gather_rows_by_matmul",
    "gelu", "layer_norm", "matmul", "max_pool_2x2", "mlp", "normalize",
    "subpixel_kernel", "token_chunks",
]
