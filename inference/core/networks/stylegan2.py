"""StyleGAN2 building blocks with EG3D's parameter names, so official weights load unchanged.

Pure PyTorch (no custom CUDA kernels): modulated convolution with demodulation, FIR up-sampling with
the [1, 3, 3, 1] filter, noise inputs, toRGB skips, and the mapping network with truncation.
Activation maps are (N, C, H, W) float32.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", gain: float | None = None,
             clamp: float | None = None, dim: int = 1) -> torch.Tensor:
    """Add a per-channel bias, apply the activation with its default gain, then clamp."""
    if bias is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + bias.reshape(shape)
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE) * (LRELU_GAIN if gain is None else gain)
    elif activation == "linear":
        if gain is not None and gain != 1:
            x = x * gain
    else:
        raise ValueError(f"unsupported activation {activation!r}")
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def make_resample_filter(taps: tuple[float, ...] = (1, 3, 3, 1)) -> torch.Tensor:
    """Separable low-pass filter, as a normalised (K, K) outer product."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """Zero-insert up-sampling, pad (x0, x1, y0, y1), then FIR filter. (N, C, H, W) -> (N, C, H', W')."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, list(pad))
    # The filter is symmetric, so correlation and convolution agree; scale so that up-sampling keeps the mean.
    kernel = (f * gain).to(x.dtype).flip([0, 1])
    kernel = kernel[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, kernel, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """FIR up-sampling by `up` that keeps the image aligned (used on the toRGB skip path)."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return upfirdn2d(x, f, up=up, pad=(p0, p1, p0, p1), gain=up * up)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True) -> torch.Tensor:
    """StyleGAN2 convolution: scale input channels per sample by `styles`, then demodulate.

    x (N, I, H, W), weight (O, I, k, k), styles (N, I), noise broadcastable to (N, O, H', W').
    Usually one grouped convolution over the batch (one modulated kernel per sample). When gradients are
    recorded for a frozen weight (fitting a latent), the styles scale the activations around a plain
    convolution instead: the same result, but the backward then skips the per-sample kernels' gradient, which
    the fused form must compute to reach the styles (about a sixth of a fitting step on CPU).
    """
    batch = x.shape[0]
    out_ch, in_ch, kh, kw = weight.shape
    fused = not (torch.is_grad_enabled() and not weight.requires_grad)
    w = weight.unsqueeze(0) * styles.reshape(batch, 1, in_ch, 1, 1)
    scale = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(batch, out_ch, 1, 1, 1) if demodulate else None
    if fused:
        w = w if scale is None else w * scale
        x = x.reshape(1, batch * in_ch, *x.shape[2:])
        kernel, groups = w.reshape(batch * out_ch, in_ch, kh, kw), batch
    else:
        x = x * styles.reshape(batch, in_ch, 1, 1)
        kernel, groups = weight, 1
    if up == 1:
        x = F.conv2d(x, kernel, padding=padding, groups=groups)
    else:
        # Transposed stride-`up` convolution followed by the FIR filter: together an aligned, alias-reduced
        # up-sampling conv. Padding chosen so a k=3 kernel and 4-tap filter map H -> up * H exactly.
        fw = resample_filter.shape[-1]
        p0 = padding + (fw + up - 1) // 2 - (kw - 1)
        p1 = padding + (fw - up) // 2 - (kw - up)
        kernel_t = kernel.reshape(groups, -1, in_ch, kh, kw).transpose(1, 2).reshape(groups * in_ch, -1, kh, kw)
        x = F.conv_transpose2d(x, kernel_t, stride=up, groups=groups)
        x = upfirdn2d(x, resample_filter, pad=(p0, p1, p0, p1), gain=up * up)
    x = x.reshape(batch, out_ch, *x.shape[2:])
    if not fused and scale is not None:
        x = x * scale.reshape(batch, out_ch, 1, 1)
    if noise is not None:
        x = x + noise
    return x


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalised learning rate: weights stored / lr_multiplier, scaled at run time."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, activation=self.activation)


class MappingNetwork(nn.Module):
    """z (N, z_dim) and camera label c (N, c_dim) -> w (N, num_ws, w_dim), with truncation toward w_avg."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998, normalize_z: bool = True) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.normalize_z = normalize_z
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        features = [z_dim + embed_features] + [w_dim] * num_layers
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.float()) if self.normalize_z else z.float())
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c.float())))
        x = torch.cat(parts, dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x[:, :cutoff] = self.w_avg.lerp(x[:, :cutoff], truncation_psi)
        return x


def _noise(layer: SynthesisLayer, x_shape: tuple[int, ...], noise_mode: str,
           device: torch.device) -> torch.Tensor | None:
    if noise_mode == "random":
        return torch.randn([x_shape[0], 1, layer.resolution, layer.resolution], device=device) * layer.noise_strength
    if noise_mode == "const":
        return layer.noise_const * layer.noise_strength
    if noise_mode == "none":
        return None
    raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally up-sampling by 2) + noise + bias + leaky ReLU."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 conv_clamp: float | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.register_buffer("resample_filter", make_resample_filter())
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)
        noise = _noise(self, x.shape, noise_mode, x.device)
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, activation="lrelu", gain=LRELU_GAIN * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation: features -> output channels (RGB or tri-plane features)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const or conv0 with up-sampling), conv1, toRGB skip.

    `upsample=False` keeps the resolution (EG3D's SynthesisBlockNoUp, used by the 2X/4X super-resolution).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None, upsample: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.upsample = upsample
        self.register_buffer("resample_filter", make_resample_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
            self.num_conv = 1
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2 if upsample else 1,
                                        conv_clamp=conv_clamp)
            self.num_conv = 2
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_torgb = 1

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: str = "random") -> tuple[torch.Tensor, torch.Tensor]:
        """ws (N, num_conv + num_torgb, w_dim); returns features and the accumulated image."""
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        if img is not None and self.upsample:
            img = upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter))
        img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """w (N, num_ws, w_dim) -> image (N, img_channels, R, R) through blocks b4 ... bR."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int, channel_max: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.block_resolutions = [2**i for i in range(2, int(np.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, channels[res], w_dim, res, img_channels, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's toRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        x, img, last_ws = self.run_prefix(ws, noise_mode)
        return self.last_block(x, img, last_ws, noise_mode=noise_mode)[1]

    @property
    def last_block(self) -> SynthesisBlock:
        return getattr(self, f"b{self.block_resolutions[-1]}")

    def run_prefix(self, ws: torch.Tensor,
                   noise_mode: str = "random") -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """All blocks but the last -> their (x, img) and the slice of ws the last block reads: the part a
        caller that tunes only the last block can compute once."""
        x = img = None
        w_idx = 0
        for res in self.block_resolutions[:-1]:
            block = getattr(self, f"b{res}")
            # Consecutive blocks share one w: block i's toRGB uses the same w as block i+1's conv0.
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode=noise_mode)
            w_idx += block.num_conv
        last = self.last_block
        return x, img, ws.narrow(1, w_idx, last.num_conv + last.num_torgb)


class StyleGAN2Backbone(nn.Module):
    """Mapping + synthesis; the synthesis output is the tri-plane stack (N, 3 * C, R, R)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 channel_base: int, channel_max: int, conv_clamp: float | None, mapping_layers: int,
                 mapping_lr_multiplier: float, w_avg_beta: float, normalize_z: bool = True) -> None:
        super().__init__()
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max,
                                          conv_clamp=conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, num_layers=mapping_layers,
                                      lr_multiplier=mapping_lr_multiplier, w_avg_beta=w_avg_beta,
                                      normalize_z=normalize_z)
