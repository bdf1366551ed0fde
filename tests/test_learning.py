"""Learning from the crowd: CSNet fine-tuned on finished masks, and the study step that uses it.

A tiny CSNet (a few thousand parameters, random weights) stands in for the shipped checkpoint, so
each test runs in seconds on CPU; the layout is a valid CSNet one, loaded by the same code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

torch = pytest.importorskip("torch")

from crowdpatch.config import ProjectConfig  # noqa: E402
from crowdpatch.datasets import load_rgb  # noqa: E402
from crowdpatch.learning import finetune_study, images_not_started  # noqa: E402
from crowdpatch.masks.metrics import mask_iou  # noqa: E402
from crowdpatch.project import Project  # noqa: E402
from crowdpatch.propose import propose  # noqa: E402
from crowdpatch.saliency.csnet import CSNetBackend  # noqa: E402
from crowdpatch.saliency.csnet_model import CSNet, load_csnet  # noqa: E402
from crowdpatch.saliency.finetune import (  # noqa: E402
    FinetuneOptions,
    finetune,
    mean_loss,
    save_finetuned,
    training_batch,
)
from crowdpatch.saliency.finetuned import newest_finetuned  # noqa: E402
from crowdpatch.saliency.stored import load_saliency  # noqa: E402
from crowdpatch.simulate.run import run_simulation  # noqa: E402
from crowdpatch.store.models import AnswerRow, ImageRow, TaskRow  # noqa: E402
from crowdpatch.workflow import SilentProgress, run_pipeline  # noqa: E402

TINY_LAYOUT = [
    [3, [4, 4]],
    [[4, 4], [4, 4]],
    [[4, 4], [8]],
    [[8], [8]],
    [[8], [8]],
    [[8, 8, 8], [4, 4, 4]],
    [[4, 4, 4], [2, 2, 2], [[1, 1, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 0, 0, 0]]],
    [[2, 2, 2], [4]],
    [1, 1, 1, 1],
]
"""A CSNet with one block per stage and 4-8 channels per scale."""


def tiny_csnet(seed: int = 0) -> CSNet:
    torch.manual_seed(seed)
    model = CSNet(TINY_LAYOUT)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() > 1:  # the convolutions start at zero; 'conv' weights are used times 100
                parameter.normal_(0, 0.01 if "conv" in name else 0.1)
    return model.eval()


def squares(count: int, size: int = 64, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Dark noisy photos with one red square each, and the square's mask."""
    rng = np.random.default_rng(seed)
    photos, masks = [], []
    for _ in range(count):
        photo = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
        mask = np.zeros((size, size), bool)
        y, x = rng.integers(4, size - 28, 2)
        photo[y : y + 24, x : x + 24] = (230, 40, 40)
        mask[y : y + 24, x : x + 24] = True
        photos.append(photo)
        masks.append(mask)
    return photos, masks


def predicted(model: CSNet, photos: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    inputs, _ = training_batch(photos, [np.zeros(p.shape[:2], bool) for p in photos], size)
    with torch.inference_mode():
        return [logits[0].numpy() > 0 for logits in model(inputs)]


def test_finetuning_lowers_the_loss_and_raises_iou_on_its_images():
    photos, masks = squares(6)
    model = tiny_csnet()
    inputs, targets = training_batch(photos, masks, (64, 64))
    loss_before = mean_loss(model, inputs, targets)
    iou_before = np.mean([mask_iou(p, m) for p, m in zip(predicted(model, photos, (64, 64)), masks)])

    result = finetune(model, photos, masks, (64, 64), FinetuneOptions(epochs=20, learning_rate=1e-3))

    assert len(result.losses) == 20
    assert mean_loss(result.model, inputs, targets) < loss_before / 2
    iou_after = np.mean([mask_iou(p, m) for p, m in zip(predicted(result.model, photos, (64, 64)), masks)])
    assert iou_after > max(0.5, iou_before + 0.2)


def test_finetuning_is_repeatable_with_its_seed():
    photos, masks = squares(4)
    options = FinetuneOptions(epochs=2, learning_rate=1e-3, seed=3)
    first = finetune(tiny_csnet(), photos, masks, (64, 64), options)
    second = finetune(tiny_csnet(), photos, masks, (64, 64), options)
    assert first.losses == second.losses


def test_finetuning_without_masks_or_with_a_mismatched_mask_is_a_clear_error():
    photos, masks = squares(2)
    with pytest.raises(ValueError, match="at least one"):
        finetune(tiny_csnet(), [], [])
    with pytest.raises(ValueError, match="mask 1"):
        finetune(tiny_csnet(), photos, [masks[0], masks[1][:10]], (64, 64))


def test_saved_weights_load_back_and_serve_as_a_backend(tmp_path: Path):
    photos, masks = squares(3)
    model = finetune(tiny_csnet(), photos, masks, (64, 64), FinetuneOptions(epochs=2, learning_rate=1e-3)).model
    path = save_finetuned(model, tmp_path / "saliency" / "finetuned-3.pt")

    loaded = load_csnet(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert newest_finetuned(tmp_path / "saliency") == path
    backend = CSNetBackend(path, input_size=64, device="cpu")
    (saliency,) = backend.predict([photos[0]])
    expected = torch.sigmoid(model(training_batch(photos[:1], masks[:1], (64, 64))[0]))[0, 0].detach().numpy()
    assert np.allclose(saliency, expected, atol=1e-5)


@pytest.fixture
def tiny_weights(tmp_path: Path) -> Path:
    return save_finetuned(tiny_csnet(), tmp_path / "weights" / "tiny.pt")


def learning_project(make_project, weights: Path, every: int = 0) -> Project:
    def configure(config: ProjectConfig) -> None:
        config.crowd.planner = "precise"
        config.crowd.gold_rate = 0.0
        config.patches.refine = "none"
        config.saliency.backend = "csnet"
        config.saliency.weights = str(weights)
        config.saliency.finetune_every = every
        config.saliency.finetune_epochs = 4
        config.saliency.finetune_learning_rate = 1e-2

    return make_project(n_images=4, size=64, configure=configure, proposed=False)


def saliency_paths(project: Project) -> dict[int, str]:
    with project.sessions() as session:
        return dict(session.execute(select(ImageRow.id, ImageRow.saliency_path).order_by(ImageRow.id)).all())


def test_the_study_step_recomputes_maps_only_of_images_not_started(make_project, tiny_weights):
    project = learning_project(make_project, tiny_weights)
    propose(project, limit=2)
    run_simulation(project)
    finished = [1, 2]
    with project.sessions() as session:
        assert session.scalars(select(ImageRow.id).where(ImageRow.stage == "done")).all() == finished
    propose(project)
    run_simulation(project, max_answers=1)  # one of the two new images gets its first answer
    with project.sessions() as session:
        started = set(
            session.scalars(
                select(func.distinct(TaskRow.image_id)).join(AnswerRow, AnswerRow.task_id == TaskRow.id)
            ).all()
        ) - set(finished)
    assert len(started) == 1
    waiting = ({3, 4} - started).pop()
    assert images_not_started(project) == [waiting]
    before = saliency_paths(project)

    report = finetune_study(project)

    assert report.trained_on == 2 and report.weights == project.path("saliency", "finetuned-2.pt")
    assert report.recomputed == [waiting]
    after = saliency_paths(project)
    assert {image for image in after if after[image] != before[image]} == {waiting}
    assert Path(after[waiting]).is_file() and Path(before[waiting]).is_file()
    # A worker looking at the image now keeps the map it was shown.
    assert finetune_study(project, skip=[waiting]).recomputed == []


def test_a_simulated_study_fine_tunes_between_rounds_and_proposes_with_the_new_weights(make_project, tiny_weights):
    project = learning_project(make_project, tiny_weights, every=2)
    run_pipeline(project, SilentProgress())

    assert project.counts().get("images_done") == 4
    # Tuned once, after the first round (none is left to tune for after the second).
    assert newest_finetuned(project.path("saliency")) == project.path("saliency", "finetuned-2.pt")
    assert not project.path("saliency", "finetuned-4.pt").exists()
    tuned = load_csnet(project.path("saliency", "finetuned-2.pt"))
    assert any(not torch.equal(tuned.state_dict()[k], v) for k, v in load_csnet(tiny_weights).state_dict().items())
    # The second round's maps came from the tuned network, not the shipped one.
    paths = saliency_paths(project)
    with project.sessions() as session:
        photos = {i: load_rgb(Path(p)) for i, p in session.execute(select(ImageRow.id, ImageRow.path)).all()}
    for image_id in (3, 4):
        stored = load_saliency(paths[image_id])
        (tuned_map,) = CSNetBackend(project.path("saliency", "finetuned-2.pt"), device="cpu").predict(
            [photos[image_id]]
        )
        (shipped_map,) = CSNetBackend(tiny_weights, device="cpu").predict([photos[image_id]])
        assert np.abs(stored - tuned_map).max() <= 0.6 / 255
        assert np.abs(stored - shipped_map).max() > 2 / 255


def test_the_finetune_saliency_command_tunes_a_served_study_and_says_what_it_did(make_project, tiny_weights, invoke):
    project = learning_project(make_project, tiny_weights)
    propose(project, limit=2)
    run_simulation(project)
    propose(project)
    before = saliency_paths(project)

    result = invoke("finetune-saliency", project.directory)

    assert result.exit_code == 0, result.stdout
    assert "fine-tuned on 2 finished masks" in result.stdout and "2 saliency maps recomputed" in result.stdout
    assert project.path("saliency", "finetuned-2.pt").is_file()
    after = saliency_paths(project)
    assert [image for image in after if after[image] != before[image]] == [3, 4]


def test_the_finetune_saliency_command_refuses_a_backend_it_cannot_tune(make_project, invoke):
    project = make_project(n_images=2, size=64)

    result = invoke("finetune-saliency", project.directory)

    assert result.exit_code == 1
    assert "backend = 'csnet'" in result.stdout
