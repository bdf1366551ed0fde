"""Classifiers with a split between features and head (the timm habit), the hook attention losses need.

``forward`` returns the logits *and* the final feature map (and, when asked, an intermediate
layer's activation), so losses that look inside the model go through the module's own forward:
under DistributedDataParallel that is what keeps gradients synchronized.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models as tv_models

from crowdpatch.registry import Registry

MODELS: Registry[Callable[[int, int], "AttentionNet"]] = Registry("model")
"""Model builders by name: ``builder(num_classes, image_size)``."""


@dataclass
class ModelOutput:
    logits: torch.Tensor
    features: torch.Tensor
    """Final feature map (B, C, h, w); the class activation map is ``head.weight @ features``."""
    layer: torch.Tensor | None = None
    """The activation of the layer named in ``forward(..., layer=...)``, for Grad-CAM."""


class AttentionNet(nn.Module):
    """A backbone of named stages, global average pooling, and one linear head."""

    def __init__(self, stages: nn.ModuleDict, feature_dim: int, num_classes: int):
        super().__init__()
        self.stages = stages
        self.head = nn.Linear(feature_dim, num_classes)

    @property
    def stage_names(self) -> list[str]:
        return list(self.stages.keys())

    def forward(self, x: torch.Tensor, layer: str | None = None) -> ModelOutput:
        captured = None
        for name, stage in self.stages.items():
            x = stage(x)
            if name == layer:
                captured = x
        logits = self.head(x.mean(dim=(2, 3)))
        return ModelOutput(logits, x, captured)

    def class_activation_map(self, features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """CAM of ``classes`` (B,) on ``features`` (B, C, h, w): exact for pooling + linear head."""
        weights = self.head.weight[classes]
        return torch.einsum("bc,bchw->bhw", weights, features)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def small_cnn(num_classes: int, width: int = 16) -> AttentionNet:
    """Four conv stages (64 px -> 8 x 8 features): trains on a CPU in minutes."""
    stages = nn.ModuleDict(
        {
            "stage1": _conv_block(3, width),
            "stage2": nn.Sequential(nn.MaxPool2d(2), _conv_block(width, 2 * width)),
            "stage3": nn.Sequential(nn.MaxPool2d(2), _conv_block(2 * width, 4 * width)),
            "stage4": nn.Sequential(nn.MaxPool2d(2), _conv_block(4 * width, 8 * width)),
        }
    )
    return AttentionNet(stages, 8 * width, num_classes)


def torchvision_resnet(name: str, num_classes: int, small_input: bool) -> AttentionNet:
    """A torchvision ResNet (random init); ``small_input`` swaps the 7x7/2 stem + max-pool for a 3x3/1 stem.

    At 64-96 px the standard stem leaves a 2 x 2 final map, too coarse for attention to mean much.
    """
    net = getattr(tv_models, name)(weights=None)
    if small_input:
        net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    stages = nn.ModuleDict(
        {
            "stem": nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
            "layer1": net.layer1,
            "layer2": net.layer2,
            "layer3": net.layer3,
            "layer4": net.layer4,
        }
    )
    return AttentionNet(stages, net.fc.in_features, num_classes)


@MODELS.register("smallcnn")
def _small_cnn(num_classes: int, image_size: int) -> AttentionNet:
    return small_cnn(num_classes)


@MODELS.register("resnet18")
def _resnet18(num_classes: int, image_size: int) -> AttentionNet:
    return torchvision_resnet("resnet18", num_classes, small_input=image_size <= 128)


@MODELS.register("resnet34")
def _resnet34(num_classes: int, image_size: int) -> AttentionNet:
    return torchvision_resnet("resnet34", num_classes, small_input=image_size <= 128)


@MODELS.register("resnet50")
def _resnet50(num_classes: int, image_size: int) -> AttentionNet:
    return torchvision_resnet("resnet50", num_classes, small_input=image_size <= 128)


MODEL_NAMES = tuple(MODELS.names())


def create_model(name: str, num_classes: int, image_size: int = 64, weights: Path | None = None) -> AttentionNet:
    """Build a model by name; ``weights`` loads a local checkpoint (never a download)."""
    model = MODELS.get(name)(num_classes, image_size)
    if weights is not None:
        load_weights(model, Path(weights))
    return model


def load_weights(model: AttentionNet, path: Path) -> None:
    """Load a local checkpoint: our own ``state_dict`` or a torchvision ResNet's (keys mapped onto the stages).

    The head is skipped when its shape differs (a checkpoint for another number of classes), and so
    is a stem whose shape differs (an ImageNet 7x7 stem on a small-input model); any other missing
    or unexpected key is an error, so a wrong file never half-loads silently.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weights file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    mapped = {_torchvision_key(key): value for key, value in state.items()}
    own = model.state_dict()
    skipped = [
        k
        for k, v in mapped.items()
        if k in own and own[k].shape != v.shape and (k.startswith("head.") or k.startswith("stages.stem.0."))
    ]
    for key in skipped:
        del mapped[key]
    wrong = [
        f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}"
        for k, v in mapped.items()
        if k in own and own[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(f"{path}: weights do not fit the model (shape mismatch: {wrong[:3]})")
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    missing = [k for k in missing if k not in skipped]
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")


def _torchvision_key(key: str) -> str:
    key = key.removeprefix("module.")
    for old, new in (("conv1.", "stages.stem.0."), ("bn1.", "stages.stem.1."), ("fc.", "head.")):
        if key.startswith(old):
            return new + key[len(old) :]
    if key.startswith("layer"):
        return "stages." + key
    return key
