"""``onnx``: any salient-object detector exported to ONNX, run with onnxruntime.

    crowdpatch bench-masks ... --saliency onnx --weights model.onnx

The model takes one ``N x 3 x H x W`` float input, normalised with ``mean``/``std`` (ImageNet's
by default) after scaling pixels to [0, 1], and its output number ``output_index`` (the first by
default) holds one map per image (``N x 1 x h x w``, ``N x h x w`` or, with N = 1, ``h x w``).

* Input size: the model's own when its input has fixed H and W (CSNet exported by
  ``crowdpatch export-onnx``: 224; U^2-Net files such as rembg's ``u2netp.onnx``: 320), else
  ``input_size`` (default 320).
* Batching: a model with a fixed batch dimension of 1 runs image by image; a dynamic one in
  batches of ``batch_size``.
* Output: ``sigmoid=True`` applies a sigmoid (logit outputs such as CSNet's); ``False`` takes the
  values as probabilities (clipped to [0, 1]); ``"auto"`` (default) decides **per image**: a map
  whose values all lie in [0, 1] is taken as a probability map, any other as logits. A logit
  map that happens to lie entirely in [0, 1] would be misread, so pass ``sigmoid=True/False``
  when you know the model. ``minmax=True`` then rescales each map to [0, 1] (what rembg does
  with U^2-Net's output).
* Provider: CUDAExecutionProvider when onnxruntime offers it, else CPUExecutionProvider.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from crowdpatch.saliency.base import SaliencyBackend, normalize_unit, register_backend
from crowdpatch.saliency.network import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    as_size,
    chunks,
    maps_to_images,
    prepare_batch,
    sigmoid,
)

DEFAULT_INPUT_SIZE = 320


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the onnx saliency backend needs onnxruntime: pip install 'crowdpatch[onnx]'") from exc
    return onnxruntime


def default_providers() -> list[str]:
    available = _onnxruntime().get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@register_backend("onnx")
class ONNXBackend(SaliencyBackend):
    """A user-given ONNX saliency model."""

    def __init__(
        self,
        weights: str | Path | None = None,
        input_size: int | Sequence[int] | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        sigmoid: bool | Literal["auto"] = "auto",
        minmax: bool = False,
        output_index: int = 0,
        batch_size: int = 8,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        if not weights:
            raise ValueError("the onnx saliency backend needs a model file: pass --weights model.onnx")
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"ONNX model not found: {path}")
        if sigmoid not in (True, False, "auto"):
            raise ValueError(f"sigmoid must be true, false or 'auto', got {sigmoid!r}")
        if len(mean) != 3 or len(std) != 3 or min(float(s) for s in std) <= 0:
            raise ValueError(f"mean and std need 3 values each (std > 0), got {list(mean)} / {list(std)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        ort = _onnxruntime()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=list(providers or default_providers()))
        except Exception as exc:  # onnxruntime raises its own error types for unreadable files
            raise ValueError(f"{path} is not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1:
            raise ValueError(f"{path}: expected one input, the model has {len(inputs)}")
        if not 0 <= output_index < len(outputs):
            raise ValueError(f"{path}: output_index {output_index} but the model has {len(outputs)} outputs")
        self.weights = path
        self.input_name = inputs[0].name
        self.output_name = outputs[output_index].name
        shape = list(inputs[0].shape)
        if len(shape) != 4 or shape[1] not in (3, None) and not isinstance(shape[1], str):
            raise ValueError(f"{path}: expected an N x 3 x H x W input, the model's is {shape}")
        fixed_hw = all(isinstance(v, int) and v > 0 for v in shape[2:])
        if fixed_hw:
            model_size = (int(shape[2]), int(shape[3]))
            if input_size is not None and as_size(input_size) != model_size:
                raise ValueError(f"{path} takes {model_size[0]} x {model_size[1]} inputs, not {as_size(input_size)}")
            self.size = model_size
        else:
            self.size = as_size(input_size if input_size is not None else DEFAULT_INPUT_SIZE)
        self.batch_size = int(shape[0]) if isinstance(shape[0], int) and shape[0] > 0 else int(batch_size)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.sigmoid, self.minmax = sigmoid, bool(minmax)
        self.providers = self.session.get_providers()

    def raw(self, batch: np.ndarray) -> np.ndarray:
        """``N x 3 x h x w`` normalised float32 -> ``N x h' x w'`` raw output maps."""
        (out,) = self.session.run([self.output_name], {self.input_name: batch})
        out = np.asarray(out, np.float32)
        if out.ndim == 4 and out.shape[1] == 1:
            out = out[:, 0]
        elif out.ndim == 2 and len(batch) == 1:
            out = out[None]
        if out.ndim != 3 or out.shape[0] != len(batch):
            raise ValueError(f"{self.weights}: expected one map per image, got an output of shape {out.shape}")
        return out

    def _to_unit(self, raw: np.ndarray) -> np.ndarray:
        apply = self.sigmoid if self.sigmoid != "auto" else not (raw.min() >= 0.0 and raw.max() <= 1.0)
        unit = sigmoid(raw) if apply else np.clip(raw, 0.0, 1.0).astype(np.float32)
        return normalize_unit(unit) if self.minmax else unit

    def predict(
        self,
        images: Sequence[np.ndarray],
        gt_masks: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        maps: list[np.ndarray] = []
        for group in chunks(list(images), self.batch_size):
            batch = prepare_batch(group, self.size, self.mean, self.std)
            raw = self.raw(batch)
            maps.extend(maps_to_images(np.stack([self._to_unit(m) for m in raw]), group))
        return maps
