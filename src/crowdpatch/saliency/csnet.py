"""``csnet``: the CSNet salient-object detector (PyTorch), from a user-given official checkpoint.

    crowdpatch bench-masks ... --saliency csnet --weights ../shared/data/weights/csnet/csnet-L-x2.pth.tar

The checkpoint (SOD100K, CC BY-NC-SA 4.0, non-commercial) is not shipped with crowdpatch; its
layout file ``<name>.layer_config.json`` must sit next to it. Images are resized to 224 x 224,
normalised with ImageNet's mean/std and run in batches; the sigmoid of the logit map is resized
back to each image. ``export_onnx`` writes the same network as an ONNX file for the ``onnx``
backend (``crowdpatch export-onnx``).

Measured on the 328 Weizmann horses (``bench/saliency_quality.py``, IoU at 2x the map's mean):
see docs/benchmarks.md, "Saliency backends".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crowdpatch.saliency.base import SaliencyBackend, register_backend
from crowdpatch.saliency.network import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_size,
    chunks,
    maps_to_images,
    prepare_batch,
    sigmoid,
)

WEIGHTS_HINT = (
    "pass --weights PATH to an official CSNet checkpoint, e.g. "
    "--weights ../shared/data/weights/csnet/csnet-L-x2.pth.tar (CC BY-NC-SA 4.0, not shipped with "
    "crowdpatch; its .layer_config.json must sit next to it)"
)


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the csnet saliency backend needs PyTorch: pip install 'crowdpatch[train]'") from exc
    return torch


@register_backend("csnet")
class CSNetBackend(SaliencyBackend):
    """CSNet in PyTorch; maps are the sigmoid of the network's logits (not min-max scaled)."""

    def __init__(
        self,
        weights: str | Path | None = None,
        layer_config: str | Path | None = None,
        input_size: int | Sequence[int] = 224,
        batch_size: int = 8,
        device: str | None = None,
    ) -> None:
        if not weights:
            raise ValueError(f"the csnet saliency backend needs its checkpoint: {WEIGHTS_HINT}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        torch = _torch()
        from crowdpatch.saliency.csnet_model import load_csnet

        self.weights = Path(weights)
        self.size = as_size(input_size)
        if self.size[0] % 16 or self.size[1] % 16:
            raise ValueError(f"CSNet's input size must be a multiple of 16, got {self.size}")
        self.batch_size = int(batch_size)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = load_csnet(self.weights, layer_config).to(self.device)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """``N x 3 x h x w`` normalised float32 -> ``N x h x w`` logits."""
        torch = _torch()
        with torch.inference_mode():
            out = self.model(torch.from_numpy(batch).to(self.device))
        return out[:, 0].float().cpu().numpy()

    def predict(
        self,
        images: Sequence[np.ndarray],
        gt_masks: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        maps: list[np.ndarray] = []
        for group in chunks(list(images), self.batch_size):
            batch = prepare_batch(group, self.size, IMAGENET_MEAN, IMAGENET_STD)
            maps.extend(maps_to_images(sigmoid(self.logits(batch)), group))
        return maps


def export_onnx(
    weights: str | Path,
    out: str | Path,
    layer_config: str | Path | None = None,
    input_size: int | Sequence[int] = 224,
    opset: int = 17,
) -> Path:
    """Write CSNet (checkpoint ``weights``) as ONNX: input ``image`` ``N x 3 x h x w`` (dynamic N,
    ImageNet-normalised), output ``logits`` ``N x 1 x h x w`` (apply a sigmoid)."""
    torch = _torch()
    from crowdpatch.saliency.csnet_model import load_csnet

    if not weights:
        raise ValueError(f"export-onnx needs the CSNet checkpoint: {WEIGHTS_HINT}")
    height, width = as_size(input_size)
    model = load_csnet(weights, layer_config)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, 3, height, width)
    with warnings.catch_warnings():
        # The TorchScript exporter is "legacy" since torch 2.9 but exports this network in ~2 s
        # with no extra dependency; fall back to the torch.export-based one where it is gone.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (example,),
                str(out),
                dynamo=False,
                input_names=["image"],
                output_names=["logits"],
                dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                opset_version=opset,
            )
        except TypeError:  # pragma: no cover - a torch without the legacy exporter
            torch.onnx.export(
                model,
                (example,),
                str(out),
                input_names=["image"],
                output_names=["logits"],
                dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
                opset_version=opset,
            )
    return out
