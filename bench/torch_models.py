"""PyTorch twins of the echojax architectures, for the side-by-side benchmarks.

Layer for layer the same networks as ``echojax.models`` (same widths, biases, norms and
parameter counts; ``bench/train_step.py`` prints both counts and refuses to time a pair
whose counts differ). NCHW for the convolutional models (the usual PyTorch layout; the
benchmark also runs them channels_last); the Swin-UNet works on ``[B, H, W, C]`` tokens
as its Flax twin does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# --- U-Net (milesial/Pytorch-UNet, bilinear=False) -----------------------------------

class DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, *, bias: bool):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths):
        super().__init__()
        w = list(widths)
        self.down = nn.ModuleList([DoubleConv(in_channels, w[0], bias=False)]
                                  + [DoubleConv(w[i - 1], w[i], bias=False) for i in range(1, len(w))])
        levels = range(len(w) - 1, 0, -1)
        self.up = nn.ModuleList([nn.ConvTranspose2d(w[i], w[i - 1], 2, stride=2) for i in levels])
        self.up_conv = nn.ModuleList([DoubleConv(2 * w[i - 1], w[i - 1], bias=False) for i in levels])
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, conv in zip(self.up, self.up_conv):
            x = conv(torch.cat([skips.pop(), up(x)], 1))
        return self.head(x)


# --- Attention U-Net (LeeJunHyun/Image_Segmentation AttU_Net) -------------------------

class AttentionGate(nn.Module):
    def __init__(self, f_g: int, f_l: int, f_int: int):
        super().__init__()
        self.w_g = nn.Sequential(nn.Conv2d(f_g, f_int, 1), nn.BatchNorm2d(f_int))
        self.w_x = nn.Sequential(nn.Conv2d(f_l, f_int, 1), nn.BatchNorm2d(f_int))
        self.psi = nn.Sequential(nn.Conv2d(f_int, 1, 1), nn.BatchNorm2d(1), nn.Sigmoid())

    def forward(self, g, x):
        return x * self.psi(F.relu(self.w_g(g) + self.w_x(x)))


class AttentionUNet(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, widths):
        super().__init__()
        w = list(widths)
        self.down = nn.ModuleList([DoubleConv(in_channels, w[0], bias=True)]
                                  + [DoubleConv(w[i - 1], w[i], bias=True) for i in range(1, len(w))])
        levels = range(len(w) - 1, 0, -1)
        self.up = nn.ModuleList([
            nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(w[i], w[i - 1], 3, padding=1),
                          nn.BatchNorm2d(w[i - 1]), nn.ReLU(inplace=True))
            for i in levels])
        self.gates = nn.ModuleList([AttentionGate(w[i - 1], w[i - 1], max(w[i - 1] // 2, 1)) for i in levels])
        self.up_conv = nn.ModuleList([DoubleConv(2 * w[i - 1], w[i - 1], bias=True) for i in levels])
        self.head = nn.Conv2d(w[0], num_classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, gate, conv in zip(self.up, self.gates, self.up_conv):
            x = up(x)
            x = conv(torch.cat([gate(x, skips.pop()), x], 1))
        return self.head(x)


# --- Swin-UNet (HuCaoFighting/Swin-Unet, expand_first), on [B, H, W, C] tokens ----------

def window_partition(x, ws):
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // ws, w // ws, ws * ws, c)


def window_merge(x, ws):
    b, nh, nw, _, c = x.shape
    return x.reshape(b, nh, nw, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, nh * ws, nw * ws, c)


def relative_position_index(ws):
    coords = np.stack(np.meshgrid(np.arange(ws), np.arange(ws), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (ws - 1)
    return torch.as_tensor(rel[0] * (2 * ws - 1) + rel[1], dtype=torch.long)


@torch.compiler.disable
def shifted_window_mask(h, w, ws, shift, device=None):
    # Built once per map size outside any torch.compile graph (a traced construction
    # produced CPU kernels inside a CUDA graph and failed to compile on the GPU machine).
    labels = torch.zeros(h, w, dtype=torch.int32)
    bounds = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
    n = 0
    for r in bounds:
        for c in bounds:
            labels[r, c] = n
            n += 1
    win = window_partition(labels[None, :, :, None], ws)[0, ..., 0]
    return (win[..., :, None] == win[..., None, :]).to(device)


class DropPath(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.ndim - 1)), device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1.0 - self.p)


class WindowAttention(nn.Module):
    def __init__(self, dim, heads, ws):
        super().__init__()
        self.heads, self.ws, self.scale = heads, ws, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, heads) * 0.02)
        self.register_buffer("index", relative_position_index(ws).reshape(-1), persistent=False)

    def forward(self, x, mask=None):
        *lead, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(*lead, n, 3, self.heads, dim // self.heads).unbind(-3)
        logits = torch.einsum("...qhd,...khd->...hqk", q * self.scale, k)
        bias = self.relative_position_bias_table[self.index].reshape(n, n, self.heads).permute(2, 0, 1)
        logits = logits + bias
        if mask is not None:
            logits = logits.masked_fill(~mask[..., None, :, :], torch.finfo(logits.dtype).min)
        out = torch.einsum("...hqk,...khd->...qhd", logits.softmax(-1), v).reshape(*lead, n, dim)
        return self.proj(out)


class SwinBlock(nn.Module):
    def __init__(self, dim, heads, ws, shifted, mlp_ratio, drop_path):
        super().__init__()
        self.ws, self.shift = ws, ws // 2 if shifted else 0
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)
        self._masks = {}

    def forward(self, x):
        _, h, w, _ = x.shape
        shift = self.shift if min(h, w) > self.ws else 0
        y = self.norm1(x)
        mask = None
        if shift:
            y = torch.roll(y, (-shift, -shift), (1, 2))
            mask = self._mask(h, w, shift, x.device)
        y = window_merge(self.attn(window_partition(y, self.ws), mask), self.ws)
        if shift:
            y = torch.roll(y, (shift, shift), (1, 2))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    @torch.compiler.disable
    def _mask(self, h, w, shift, device):
        key = (h, w, device)
        if key not in self._masks:
            self._masks[key] = shifted_window_mask(h, w, self.ws, shift, device)
        return self._masks[key]


class PatchMerging(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class PatchExpand(nn.Module):
    def __init__(self, dim, out_dim, scale):
        super().__init__()
        self.scale, self.out_dim = scale, out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x):
        b, h, w, _ = x.shape
        s, c = self.scale, self.out_dim
        x = self.expand(x).reshape(b, h, w, s, s, c).permute(0, 1, 3, 2, 4, 5)
        return self.norm(x.reshape(b, h * s, w * s, c))


class SwinUNet(nn.Module):
    def __init__(self, in_channels, num_classes, *, patch_size=4, embed_dim=96, depths=(2, 2, 2, 2),
                 num_heads=(3, 6, 12, 24), window_size=8, mlp_ratio=4.0, drop_path_rate=0.1,
                 **unused):
        super().__init__()
        n = len(depths)
        dims = [embed_dim * 2**i for i in range(n)]
        rates = np.linspace(0.0, drop_path_rate, sum(depths))
        starts = np.cumsum((0,) + tuple(depths))

        def stage(i):
            return nn.Sequential(*[
                SwinBlock(dims[i], num_heads[i], window_size, bool(j % 2), mlp_ratio,
                          float(rates[starts[i] + j])) for j in range(depths[i])])

        self.patch_embed = nn.Conv2d(in_channels, embed_dim, patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        self.encoder = nn.ModuleList([stage(i) for i in range(n)])
        self.merges = nn.ModuleList([PatchMerging(dims[i]) for i in range(n - 1)])
        self.norm = nn.LayerNorm(dims[-1])
        levels = range(n - 2, -1, -1)
        self.expands = nn.ModuleList([PatchExpand(dims[i + 1], dims[i], 2) for i in levels])
        self.concat_linears = nn.ModuleList([nn.Linear(2 * dims[i], dims[i]) for i in levels])
        self.decoder = nn.ModuleList([stage(i) for i in levels])
        self.norm_up = nn.LayerNorm(embed_dim)
        self.final_expand = PatchExpand(embed_dim, embed_dim, patch_size)
        self.head = nn.Conv2d(embed_dim, num_classes, 1, bias=False)

    def forward(self, x):  # x: [B, C, H, W] like the conv models; tokens inside
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 1))
        skips = []
        for i, st in enumerate(self.encoder):
            if i:
                x = self.merges[i - 1](x)
            skips.append(x)
            x = st(x)
        x = self.norm(x)
        skips.pop()
        for expand, lin, st in zip(self.expands, self.concat_linears, self.decoder):
            x = st(lin(torch.cat([expand(x), skips.pop()], -1)))
        x = self.final_expand(self.norm_up(x)).permute(0, 3, 1, 2)
        return self.head(x)


def create(name: str, *, in_channels: int = 1, num_classes: int = 4, **overrides) -> nn.Module:
    """The PyTorch twin of ``echojax.models.create(name, **overrides)``."""
    if name == "unet":
        return UNet(in_channels, num_classes, overrides.get("widths", (64, 128, 256, 512, 1024)))
    if name == "attention_unet":
        return AttentionUNet(in_channels, num_classes, overrides.get("widths", (64, 128, 256, 512, 1024)))
    if name == "swin_unet":
        return SwinUNet(in_channels, num_classes, **overrides)
    raise ValueError(f"unknown architecture {name!r}")


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
