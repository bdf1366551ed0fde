"""CSNet (Gao et al., ECCV 2020, "Highly Efficient Salient Object Detection with 100K Parameters").

A PyTorch definition written for this project so the official checkpoints (SOD100K,
``csnet-L-x1`` / ``csnet-L-x2``, CC BY-NC-SA 4.0, not shipped) load with ``strict=True``. The
parameter names and shapes follow the checkpoints' state dict; the per-layer channel widths come
from the checkpoint's layout (``*.layer_config.json``: for each gOctConv layer the number of
channels at each scale, as learnt by the paper's dynamic weight decay).

Structure (all feature maps are *lists* of per-scale tensors, scale ``i`` at 1/2**i of scale 0):

* **gOctConv** (``GOctConvBNPReLU``): one weight ``[sum(out), sum(in), k, k]`` whose block
  ``(j, i)`` maps input scale ``i`` to output scale ``j``. A coarser input is convolved and then
  bilinearly upsampled; a finer input is max-pooled down first. ``stride=2`` average-pools every
  input before the convolutions. Then BatchNorm + PReLU per output scale.
* **Depthwise per-scale 3x3** (``ScaleWiseDepthwise``): one depthwise conv + BN + PReLU per scale.
* **ILBlock** = gOctConv (3x3 for the first block and stride-2 blocks, else 1x1) followed by two
  depthwise per-scale 3x3 layers. Stage layout ``[1, 3, 4, 6, 4]`` blocks; stages 2-4 start with
  stride 2 and each stage's last block collapses to one scale.
* **CSF head** (``CSFHead``): a gOctConv 1x1 over the finest scale of stages 2, 3 and 4 (treated
  as scales 0, 1, 2), a per-scale multi-dilation block (dilations 1, 2, 4, 8, 16, channel counts
  from the layout, concatenated, BN, PReLU), and a gOctConv 1x1 back to a single scale;
  then a 1x1 classifier and a bilinear resize to the input size (the logit map).

Convolutions that the original code wraps as "Conv2dX100" (depthwise, multi-dilation and
single-scale-to-single-scale convs) use ``100 * weight``; the multi-scale gOctConv weight is used
as stored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DILATIONS = (1, 2, 4, 8, 16)
WEIGHT_SCALE = 100.0  # the original "Conv2dX100" parametrisation (faster convergence)

Scales = list[torch.Tensor | None]


def _widths(values: Sequence[float] | float | int) -> list[int]:
    if isinstance(values, (int, float)):
        values = [values]
    return [int(round(float(v))) for v in values]


def _offsets(widths: Sequence[int]) -> list[int]:
    offsets = [0]
    for width in widths:
        offsets.append(offsets[-1] + width)
    return offsets


class _BranchNorm(nn.Module):
    """BatchNorm + PReLU per scale (``bns.i`` / ``prelus.i``; ``None`` for an empty scale)."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        self.bns = nn.ModuleList([nn.BatchNorm2d(w) if w > 0 else None for w in widths])
        self.prelus = nn.ModuleList([nn.PReLU(w) if w > 0 else None for w in widths])

    def normalize(self, index: int, x: torch.Tensor) -> torch.Tensor:
        return self.prelus[index](self.bns[index](x))


class _Conv(nn.Module):
    """A conv holding ``weight`` (key ``conv.weight``); the forward is done by its owner."""

    def __init__(self, out_channels: int, in_channels: int, kernel: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(out_channels, in_channels, kernel, kernel))


class GOctConvBNPReLU(_BranchNorm):
    """Generalised octave convolution between scale lists, then BN + PReLU per output scale."""

    def __init__(self, in_widths: Sequence[int], out_widths: Sequence[int], kernel: int, stride: int = 1) -> None:
        super().__init__(out_widths)
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.in_widths, self.out_widths = list(in_widths), list(out_widths)
        self.in_offsets, self.out_offsets = _offsets(self.in_widths), _offsets(self.out_widths)
        self.kernel, self.stride, self.padding = kernel, stride, kernel // 2
        # One scale in and one out is a plain (x100) convolution with a real stride.
        self.single = len(self.in_widths) == 1 and len(self.out_widths) == 1
        self.conv = _Conv(sum(self.out_widths), sum(self.in_widths), kernel)

    def forward(self, xs: Scales) -> Scales:
        weight = self.conv.weight
        if self.single:
            y = F.conv2d(xs[0], WEIGHT_SCALE * weight, None, self.stride, self.padding)
            return [self.normalize(0, y)]
        sums: Scales = [None] * len(self.out_widths)
        for i, x in enumerate(xs):
            if x is None or self.in_widths[i] == 0:
                continue
            if self.stride == 2:
                x = F.avg_pool2d(x, 2, stride=2)
            x_lo, x_hi = self.in_offsets[i], self.in_offsets[i + 1]
            for j in range(len(self.out_widths)):
                y_lo, y_hi = self.out_offsets[j], self.out_offsets[j + 1]
                if y_lo == y_hi:
                    continue
                block = weight[y_lo:y_hi, x_lo:x_hi]
                if i > j:  # coarser input: convolve, then upsample
                    y = F.conv2d(x, block, None, 1, self.padding)
                    y = F.interpolate(y, scale_factor=float(2 ** (i - j)), mode="bilinear", align_corners=False)
                elif i < j:  # finer input: max-pool down, then convolve
                    factor = 2 ** (j - i)
                    y = F.conv2d(F.max_pool2d(x, factor, stride=factor), block, None, 1, self.padding)
                else:
                    y = F.conv2d(x, block, None, 1, self.padding)
                sums[j] = y if sums[j] is None else sums[j] + y
        return [None if y is None else self.normalize(j, y) for j, y in enumerate(sums)]


class ScaleWiseDepthwise(_BranchNorm):
    """Per-scale depthwise 3x3 (x100) + BN + PReLU (``convs.i``, ``bns.i``, ``prelus.i``)."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__(widths)
        self.widths = list(widths)
        self.convs = nn.ModuleList([_DepthwiseWeight(w) if w > 0 else None for w in widths])

    def forward(self, xs: Scales) -> Scales:
        out: Scales = []
        for i, x in enumerate(xs):
            if x is None or self.convs[i] is None:
                out.append(None)
                continue
            y = F.conv2d(x, WEIGHT_SCALE * self.convs[i].weight, None, 1, 1, 1, self.widths[i])
            out.append(self.normalize(i, y))
        return out


class _DepthwiseWeight(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(channels, 1, 3, 3))


class ILBlock(nn.Module):
    """gOctConv (``conv1x1``, 3x3 when ``wide``) then two per-scale depthwise 3x3 layers."""

    def __init__(
        self, in_widths: Sequence[int], out_widths: Sequence[int], stride: int = 1, wide: bool = False
    ) -> None:
        super().__init__()
        kernel = 3 if (wide or stride == 2) else 1
        self.conv1x1 = GOctConvBNPReLU(in_widths, out_widths, kernel, stride)
        self.conv3x3_1 = ScaleWiseDepthwise(out_widths)
        self.conv3x3_2 = ScaleWiseDepthwise(out_widths)

    def forward(self, xs: Scales) -> Scales:
        return self.conv3x3_2(self.conv3x3_1(self.conv1x1(xs)))


class MultiDilation(nn.Module):
    """Parallel 3x3 (x100) convs with dilations 1..16 (``msconv.k``; absent when 0 channels),
    concatenated, then BN + PReLU."""

    def __init__(self, in_channels: int, dil_channels: Sequence[int]) -> None:
        super().__init__()
        if len(dil_channels) != len(DILATIONS):
            raise ValueError(f"expected {len(DILATIONS)} dilation widths, got {list(dil_channels)}")
        self.msconv = nn.ModuleList([_Conv(c, in_channels, 3) if c > 0 else None for c in dil_channels])
        out_channels = sum(dil_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.prelu = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [
            F.conv2d(x, WEIGHT_SCALE * conv.weight, None, 1, d, d)
            for conv, d in zip(self.msconv, DILATIONS)
            if conv is not None
        ]
        return self.prelu(self.bn(torch.cat(outs, dim=1)))


class _ScaleWiseMultiDilation(nn.Module):
    def __init__(self, in_widths: Sequence[int], dil_channels: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [MultiDilation(w, d) if max(d) > 0 else None for w, d in zip(in_widths, dil_channels)]
        )

    def forward(self, xs: Scales) -> Scales:
        return [None if m is None or x is None else m(x) for m, x in zip(self.convs, xs)]


class CSFHead(nn.Module):
    """Cross-stage fusion: gOctConv 1x1, per-scale multi-dilation, gOctConv 1x1 to one scale."""

    def __init__(self, fuse: Sequence, ms: Sequence, out: Sequence) -> None:
        super().__init__()
        self.fuse = GOctConvBNPReLU(_widths(fuse[0]), _widths(fuse[1]), 1)
        dil_channels = [_widths(row) for row in ms[2]]
        self.ms = _ScaleWiseMultiDilation(_widths(ms[0]), dil_channels)
        ms_out = [sum(row) for row in dil_channels]
        if ms_out != _widths(ms[1]):
            raise ValueError(f"CSF layout: dilation widths {dil_channels} do not sum to {_widths(ms[1])}")
        self.fuse1x1 = GOctConvBNPReLU(ms_out, _widths(out[1]), 1)

    def forward(self, xs: Scales) -> Scales:
        return self.fuse1x1(self.ms(self.fuse(xs)))


class CSNet(nn.Module):
    """Image ``N x 3 x H x W`` (ImageNet-normalised; H, W multiples of 16) -> logits ``N x 1 x H x W``."""

    def __init__(self, layer_config: Sequence) -> None:
        super().__init__()
        layer_config = list(layer_config)
        if len(layer_config) < 5:
            raise ValueError("layer_config is too short to describe a CSNet")
        stages = [int(s) for s in layer_config[-1]]
        if len(stages) != 4 or len(layer_config) != 1 + sum(stages) + 3 + 1:
            raise ValueError(
                f"layer_config has {len(layer_config)} entries; stages {stages} need {1 + sum(stages) + 4}"
            )
        self.stages = stages
        self.layer_config = layer_config
        index = 0

        def block(stride: int = 1, wide: bool = False) -> ILBlock:
            nonlocal index
            entry = layer_config[index]
            index += 1
            return ILBlock(_widths(entry[0]), _widths(entry[1]), stride, wide)

        self.stage0 = nn.ModuleList([block(wide=True)])
        self.stage1 = nn.ModuleList([block() for _ in range(stages[0])])
        self.stage2 = nn.ModuleList([block(2)] + [block() for _ in range(stages[1] - 1)])
        self.stage3 = nn.ModuleList([block(2)] + [block() for _ in range(stages[2] - 1)])
        self.stage4 = nn.ModuleList([block(2)] + [block() for _ in range(stages[3] - 1)])
        self.oct_fuse = CSFHead(layer_config[index], layer_config[index + 1], layer_config[index + 2])
        self.cls_layer = nn.Conv2d(sum(_widths(layer_config[index + 2][1])), 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs: Scales = [x]
        for layer in self.stage0:
            xs = layer(xs)
        for layer in self.stage1:
            xs = layer(xs)
        for layer in self.stage2:
            xs = layer(xs)
        x2 = xs[0]
        for layer in self.stage3:
            xs = layer(xs)
        x3 = xs[0]
        for layer in self.stage4:
            xs = layer(xs)
        fused = self.oct_fuse([x2, x3, xs[0]])
        logits = self.cls_layer(fused[0])
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def layer_config_path(weights: str | Path) -> Path:
    """``csnet-L-x2.pth.tar`` -> ``csnet-L-x2.layer_config.json`` next to it."""
    weights = Path(weights)
    name = weights.name
    for suffix in (".pth.tar", ".pth", ".pt", ".tar"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return weights.with_name(name + ".layer_config.json")


def load_csnet(weights: str | Path, layer_config: str | Path | None = None) -> CSNet:
    """Build CSNet from ``weights``' layout file and load the checkpoint with ``strict=True``.

    Raises ``ValueError`` (naming the file) when the file is missing, not a PyTorch checkpoint,
    or holds a state dict that does not fit the layout.
    """
    weights = Path(weights)
    if not weights.is_file():
        raise ValueError(f"CSNet weights not found: {weights}")
    config_path = Path(layer_config) if layer_config else layer_config_path(weights)
    if not config_path.is_file():
        raise ValueError(
            f"CSNet layout file not found: {config_path} (the per-layer channel split that comes "
            f"with the checkpoint; pass layer_config=PATH if it lives elsewhere)"
        )
    try:
        config = json.loads(config_path.read_text())
        model = CSNet(config)
    except (json.JSONDecodeError, TypeError, IndexError, ValueError) as exc:
        raise ValueError(f"{config_path} is not a CSNet layer_config: {exc}") from exc
    try:
        checkpoint = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / format errors all mean "not a checkpoint"
        raise ValueError(f"{weights} is not a PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{weights} holds no state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:4]
        raise ValueError(f"{weights} does not fit the CSNet layout {config_path.name}: {' '.join(first)}") from exc
    return model.eval()
