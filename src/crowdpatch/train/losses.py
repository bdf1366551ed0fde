"""Attention losses, each a small registered class (the DomainBed habit), combined by name: "bgswap+cam".

A *penalty* adds ``weight * value`` to the cross-entropy; an *augmentation* changes the batch
before the forward pass. A penalty on positive evidence alone is evaded (the model predicts
through negative evidence outside the mask), so the map penalties here penalize evidence of both
signs: the absolute class-margin map.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from crowdpatch.registry import Registry
from crowdpatch.train.models import AttentionNet, ModelOutput

EPS = 1e-6


@dataclass
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor  # (B, 1, H, W) in [0, 1]
    has_mask: torch.Tensor  # (B,) bool


class Penalty(ABC):
    name: ClassVar[str]
    layer: ClassVar[str | None] = None
    needs_input_grad: ClassVar[bool] = False

    def __init__(self, weight: float):
        self.weight = weight

    @abstractmethod
    def __call__(self, model: AttentionNet, out: ModelOutput, batch: Batch) -> torch.Tensor: ...


class Augmentation(ABC):
    name: ClassVar[str]

    @abstractmethod
    def __call__(self, batch: Batch, generator: torch.Generator | None) -> Batch: ...


LOSSES: Registry[type[Penalty] | type[Augmentation]] = Registry("loss")
"""Every loss a spec may name: penalties and augmentations share one namespace."""


def margin_weights(model: AttentionNet, labels: torch.Tensor) -> torch.Tensor:
    """Head weights of the true class minus the mean of the others: the map of the decision itself."""
    weight = model.head.weight
    num_classes = weight.shape[0]
    others = (weight.sum(0, keepdim=True) - weight[labels]) / max(1, num_classes - 1)
    return weight[labels] - others


def outside_share(evidence: torch.Tensor, masks: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked samples of the share of |evidence| that lies outside the mask (0 = all inside)."""
    mask = F.adaptive_avg_pool2d(masks, evidence.shape[-2:]).squeeze(1)
    magnitude = evidence.abs().float()
    share = (magnitude * (1 - mask)).sum(dim=(1, 2)) / (magnitude.sum(dim=(1, 2)) + EPS)
    return masked_mean(share, has_mask)


def masked_mean(values: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
    """Mean over the samples that have a mask (0 when none has), without a host-device sync."""
    weights = has_mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


@LOSSES.register("cam")
class CamPenalty(Penalty):
    """Final-layer class-margin CAM outside the mask; computed from tensors the forward made anyway."""

    def __call__(self, model, out, batch):
        cam = torch.einsum("bc,bchw->bhw", margin_weights(model, batch.labels), out.features)
        return outside_share(cam, batch.masks, batch.has_mask)


@LOSSES.register("camfar")
class FarCamPenalty(Penalty):
    """The class-margin CAM only where the mask is confidently background: away from anything it calls object.

    A crowd mask is soft and its edge is uncertain (a grid cell that holds a leg holds grass too;
    a missed leg is object the mask calls background). Dilating the mask by ``margin`` of the image
    side before taking its complement leaves that band unpenalized, so only evidence far from the
    object is pushed down.
    """

    margin = 0.1

    def __call__(self, model, out, batch):
        cam = torch.einsum("bc,bchw->bhw", margin_weights(model, batch.labels), out.features)
        return outside_share(cam, dilate(batch.masks, self.margin), batch.has_mask)


@LOSSES.register("gradcam")
class GradCamPenalty(Penalty):
    """Grad-CAM (Selvaraju et al.) of the true class at an inner layer, outside the mask (after Yang et al. 2019)."""

    layer = "inner"

    def __call__(self, model, out, batch):
        score = out.logits.gather(1, batch.labels[:, None]).sum()
        (grads,) = torch.autograd.grad(score, out.layer, create_graph=True)
        cam = (grads.mean(dim=(2, 3), keepdim=True) * out.layer).sum(1)
        return outside_share(cam, batch.masks, batch.has_mask)


@LOSSES.register("rrr")
class RightReasonsPenalty(Penalty):
    """Ross et al. 2017: squared input gradient of the summed log-probabilities outside the mask."""

    needs_input_grad = True

    def __call__(self, model, out, batch):
        log_probs = F.log_softmax(out.logits.float(), dim=1).sum()
        (grads,) = torch.autograd.grad(log_probs, batch.images, create_graph=True)
        outside = (grads * (1 - batch.masks)) ** 2
        return masked_mean(outside.sum(dim=(1, 2, 3)), batch.has_mask)


@LOSSES.register("bgswap")
class BackgroundSwap(Augmentation):
    """Paste each masked object onto another training image (its background replaces ours).

    The mask is used as a soft alpha, so an uncertain crowd mask blends instead of cutting; with
    probability ``1 - rate`` a sample is left as it is, so the model still sees real images.
    """

    rate = 0.5

    def __call__(self, batch, generator):
        size = batch.images.shape[0]
        if size < 2:
            return batch
        device = batch.images.device
        perm = derangement(size, generator).to(device)
        chosen = (torch.rand(size, generator=generator).to(device) < self.rate) & batch.has_mask
        swapped = batch.masks * batch.images + (1 - batch.masks) * batch.images[perm]
        images = torch.where(chosen[:, None, None, None], swapped, batch.images)
        return Batch(images, batch.labels, batch.masks, batch.has_mask)


@LOSSES.register("erodeswap")
class ErodedSwap(BackgroundSwap):
    """bgswap with the mask eroded by ``margin`` of the image side first: only the mask's confident core is pasted.

    A crowd mask that reaches past the object carries a rim of the object's own background into the
    new image, and that rim still shows the shortcut; eroding cuts the rim (and a little of the
    object's edge, which the object can spare).
    """

    margin = 0.05

    def __call__(self, batch, generator):
        core = erode(batch.masks, self.margin)
        swapped = super().__call__(Batch(batch.images, batch.labels, core, batch.has_mask), generator)
        return Batch(swapped.images, batch.labels, batch.masks, batch.has_mask)


def _window(masks: torch.Tensor, margin: float) -> int:
    """An odd pooling window of about ``margin`` x the image side on each side of a pixel."""
    return 2 * max(1, round(margin * masks.shape[-1])) + 1


def erode(masks: torch.Tensor, margin: float) -> torch.Tensor:
    """Grey-level erosion (min filter) of (B, 1, H, W) masks: a pixel keeps the lowest value within ``margin``."""
    size = _window(masks, margin)
    return -F.max_pool2d(-masks, size, stride=1, padding=size // 2)


def dilate(masks: torch.Tensor, margin: float) -> torch.Tensor:
    """Grey-level dilation (max filter) of (B, 1, H, W) masks: a pixel takes the highest value within ``margin``."""
    size = _window(masks, margin)
    return F.max_pool2d(masks, size, stride=1, padding=size // 2)


def derangement(size: int, generator: torch.Generator | None) -> torch.Tensor:
    """A random permutation with no fixed point: every sample gets another sample's background."""
    perm = torch.randperm(size, generator=generator)
    for i in range(size):
        if perm[i] == i:
            j = (i + 1) % size
            perm[i], perm[j] = perm[j].clone(), perm[i].clone()
    return perm


@LOSSES.register("none")
class PlainCrossEntropy(Augmentation):
    """No attention loss: the batch as it is, so the objective is the cross-entropy alone."""

    def __call__(self, batch, generator):
        return batch


PENALTIES = {name: loss for name, loss in LOSSES.items() if issubclass(loss, Penalty)}
AUGMENTATIONS = {
    name: loss for name, loss in LOSSES.items() if issubclass(loss, Augmentation) and loss is not PlainCrossEntropy
}
"""The attention losses proper ("none" aside), by kind."""


@dataclass
class Objective:
    """Cross-entropy plus the named penalties, after the named augmentations."""

    augmentations: list[Augmentation] = field(default_factory=list)
    penalties: list[Penalty] = field(default_factory=list)
    layer: str | None = None

    @property
    def name(self) -> str:
        parts = [a.name for a in self.augmentations] + [p.name for p in self.penalties]
        return "+".join(parts) or "none"

    def loss(self, model: AttentionNet, batch: Batch, generator: torch.Generator | None = None):
        """Returns (total loss, logits, {part: detached tensor}) for one batch."""
        for augment in self.augmentations:
            batch = augment(batch, generator)
        if any(p.needs_input_grad for p in self.penalties):
            batch.images = batch.images.detach().requires_grad_(True)
        out: ModelOutput = model(batch.images, layer=self.layer)
        ce = F.cross_entropy(out.logits.float(), batch.labels)
        total = ce
        # Parts stay tensors: turning them into floats here would stall the GPU every step.
        parts = {"ce": ce.detach()}
        inner = _unwrap(model)
        for penalty in self.penalties:
            value = penalty(inner, out, batch)
            parts[penalty.name] = value.detach()
            total = total + penalty.weight * value
        return total, out.logits, parts


def _unwrap(model) -> AttentionNet:
    return getattr(model, "module", model)


def build_objective(spec: str, weight: float, model: AttentionNet) -> Objective:
    """Parse "none", "cam", "bgswap", "bgswap+cam", ...; every penalty gets ``weight``."""
    objective = Objective()
    for name in [part.strip() for part in spec.split("+") if part.strip()]:
        loss = LOSSES.get(name)
        if issubclass(loss, Augmentation):
            if loss is not PlainCrossEntropy:
                objective.augmentations.append(loss())
            continue
        penalty = loss(weight)
        objective.penalties.append(penalty)
        if penalty.layer == "inner":
            objective.layer = model.stage_names[-2]
    return objective
