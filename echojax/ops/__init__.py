"""Fast CPU implementations of the U-Net family's layers, parameter-compatible with the
Flax layers they replace (see ``bench/README.md`` for the measurements)."""

from echojax.ops.conv import conv_1x1, conv_same, conv_same_im2col, conv_same_xla, conv_transpose_2x2
from echojax.ops.norm import batch_norm_train
from echojax.ops.pool import max_pool_2x2
from echojax.ops.winograd import conv_same_winograd

__all__ = ["batch_norm_train", "conv_1x1", "conv_same", "conv_same_im2col", "conv_same_winograd", "conv_same_xla",
           "conv_transpose_2x2", "max_pool_2x2"]
