"""CSNet (PyTorch) and generic ONNX saliency backends, and the CSNet -> ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

from crowdpatch.masks import mask_iou  # noqa: E402
from crowdpatch.saliency import create_backend, resolve_threshold  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CSNET_DIR = DATA / "weights" / "csnet"
CSNET_X2 = CSNET_DIR / "csnet-L-x2.pth.tar"
HORSES = DATA / "weizmann_horse"

needs_weights = pytest.mark.skipif(not CSNET_X2.is_file(), reason=f"CSNet checkpoints not found under {CSNET_DIR}")
needs_horses = pytest.mark.skipif(not (HORSES / "rgb").is_dir(), reason=f"Weizmann horses not found under {HORSES}")


@pytest.fixture(scope="module")
def csnet():
    return create_backend("csnet", weights=str(CSNET_X2), batch_size=5)


def load_horses(count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from PIL import Image

    pairs = []
    for path in sorted((HORSES / "rgb").glob("*.jpg"))[:count]:
        image = np.asarray(Image.open(path).convert("RGB"))
        mask = np.asarray(Image.open(HORSES / "figure_ground" / path.name).convert("L"))
        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        pairs.append((image, (mask > 127).astype(np.uint8)))
    return pairs


@needs_weights
@pytest.mark.parametrize("name, params", [("csnet-L-x1", 93_647), ("csnet-L-x2", 140_894)])
def test_official_checkpoints_load_strictly(name, params):
    from crowdpatch.saliency.csnet_model import load_csnet

    model = load_csnet(CSNET_DIR / f"{name}.pth.tar")  # load_state_dict(strict=True) inside
    state = torch.load(CSNET_DIR / f"{name}.pth.tar", map_location="cpu", weights_only=True)["state_dict"]
    assert set(model.state_dict()) == set(state)
    assert sum(p.numel() for p in model.parameters()) == params
    out = model(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 1, 64, 64)


@needs_weights
def test_wrong_file_is_a_clear_value_error(tmp_path):
    from crowdpatch.saliency.csnet_model import load_csnet

    junk = tmp_path / "csnet-L-x2.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    (tmp_path / "csnet-L-x2.layer_config.json").write_text((CSNET_DIR / "csnet-L-x2.layer_config.json").read_text())
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_csnet(junk)
    # A real checkpoint with the other model's layout: shapes do not fit.
    with pytest.raises(ValueError, match="does not fit the CSNet layout"):
        load_csnet(CSNET_X2, CSNET_DIR / "csnet-L-x1.layer_config.json")
    with pytest.raises(ValueError, match="layout file not found"):
        load_csnet(CSNET_X2, tmp_path / "missing.json")
    with pytest.raises(ValueError, match="weights not found"):
        create_backend("csnet", weights=str(tmp_path / "nope.pth.tar"))


def test_csnet_without_weights_names_the_option():
    with pytest.raises(ValueError, match="--weights"):
        create_backend("csnet")
    with pytest.raises(ValueError, match="--weights"):
        create_backend("onnx")


@needs_weights
@needs_horses
def test_csnet_separates_horses_from_background(csnet):
    pairs = load_horses(5)
    maps = csnet.predict([image for image, _ in pairs])
    inside, outside, ious = [], [], []
    for saliency, (image, mask) in zip(maps, pairs):
        assert saliency.shape == mask.shape and saliency.dtype == np.float32
        assert 0.0 <= saliency.min() and saliency.max() <= 1.0
        inside.append(saliency[mask.astype(bool)].mean())
        outside.append(saliency[~mask.astype(bool)].mean())
        ious.append(mask_iou(saliency > resolve_threshold(saliency, "adaptive"), mask))
    assert np.mean(inside) > 0.7 and np.mean(outside) < 0.15
    assert np.mean(ious) > 0.6


@needs_weights
def test_onnx_export_round_trip_matches_pytorch(csnet, tmp_path):
    pytest.importorskip("onnxruntime")
    from crowdpatch.saliency.csnet import export_onnx

    path = export_onnx(CSNET_X2, tmp_path / "csnet.onnx")
    backend = create_backend("onnx", weights=str(path), sigmoid=True, batch_size=3)
    assert backend.size == (224, 224)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90 + 7 * k, 120, 3), dtype=np.uint8) for k in range(2)]
    from crowdpatch.saliency.network import maps_to_images, prepare_batch, sigmoid

    batch = prepare_batch(images, (224, 224))
    logits = csnet.logits(batch)
    np.testing.assert_allclose(backend.raw(batch), logits, atol=1e-4, rtol=0)
    for ours, theirs in zip(backend.predict(images), maps_to_images(sigmoid(logits), images)):
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def _tiny_onnx(path: Path, probability: bool) -> Path:
    pytest.importorskip("onnxruntime")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return torch.sigmoid(y) if probability else 5 * y

    torch.manual_seed(0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Tiny().eval(),
            (torch.zeros(1, 3, 32, 48),),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
        )
    return path


@pytest.mark.parametrize("probability", [False, True])
def test_onnx_backend_on_a_tiny_model(tmp_path, probability):
    path = _tiny_onnx(tmp_path / "tiny.onnx", probability)
    backend = create_backend("onnx", weights=str(path))
    assert backend.size == (32, 48) and backend.providers[-1] == "CPUExecutionProvider"
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(50, 70), (33, 20), (64, 64)]]
    maps = backend.predict(images)
    for saliency, image in zip(maps, images):
        assert saliency.shape == image.shape[:2] and saliency.dtype == np.float32
        assert 0.0 <= saliency.min() and saliency.max() <= 1.0
        assert saliency.std() > 0
    # 'auto' takes a probability map as it is, and squashes a logit map with a sigmoid.
    from crowdpatch.saliency.network import prepare_batch

    raw = backend.raw(prepare_batch(images[:1], (32, 48)))
    expected = raw[0] if probability else 1 / (1 + np.exp(-raw[0]))
    np.testing.assert_allclose(backend._to_unit(raw[0]), expected, atol=1e-6)


def test_onnx_backend_rejects_a_bad_file(tmp_path):
    pytest.importorskip("onnxruntime")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        create_backend("onnx", weights=str(bad))
