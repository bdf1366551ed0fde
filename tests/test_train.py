"""Training with attention (crowdpatch.train): models, losses, evaluation, tensors, project data, the trainer.

Every training here is tiny (a few dozen images of 32 px, smallcnn, 1-3 epochs) and single-threaded:
the checks are about behaviour, not about accuracy.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sqlalchemy import select

from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.masks.build import build_masks
from crowdpatch.project import Project
from crowdpatch.propose import propose
from crowdpatch.simulate.run import run_simulation
from crowdpatch.store.models import ImageRow, MaskRow
from crowdpatch.train import trainer as trainer_module
from crowdpatch.train.data import GUIDES, load_splits
from crowdpatch.train.evaluate import attention_quality, evaluate, group_accuracy
from crowdpatch.train.losses import (
    AUGMENTATIONS,
    PENALTIES,
    BackgroundSwap,
    Batch,
    CamPenalty,
    build_objective,
    margin_weights,
    outside_share,
)
from crowdpatch.train.models import MODEL_NAMES, ModelOutput, create_model
from crowdpatch.train.tensors import (
    GuidedDataset,
    SplitTensors,
    denormalize,
    load_experiment_tensors,
    load_splits_file,
    save_experiment_tensors,
    save_splits,
)
from crowdpatch.train.trainer import TrainConfig, fit

GROUP_NAMES = ["a|background=land", "a|background=water", "b|background=land", "b|background=water"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_split(n: int = 32, size: int = 32, seed: int = 0, guided: bool = True) -> SplitTensors:
    """A hand-made split: random pixels, a square object per image (GT and guide), four groups."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    groups = labels * 2 + (torch.arange(n) // 2) % 2
    gt = torch.zeros(n, 1, size, size)
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        gt[i, :, top : top + size // 2, left : left + size // 2] = 1
    gt[:, :, 0, 0] = -1  # one ignore pixel per image
    images = torch.randn(n, 3, size, size, generator=g) * 0.5
    images = images + (labels.float() - 0.5)[:, None, None, None] * (gt == 1)  # the class lives in the object
    return SplitTensors(
        images=images,
        labels=labels,
        groups=groups,
        guides=(gt == 1).float() if guided else torch.zeros(n, 1, size, size),
        has_guide=torch.full((n,), guided),
        gt=gt,
        class_names=["a", "b"],
        group_names=list(GROUP_NAMES),
        names=[f"{i:05d}.png" for i in range(n)],
    )


def make_splits(train: int = 32, held_out: int = 16, size: int = 32) -> dict[str, SplitTensors]:
    return {
        "train": make_split(train, size, seed=0),
        "val": make_split(held_out, size, seed=1, guided=False),
        "test": make_split(held_out, size, seed=2, guided=False),
    }


# -- models ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, channels", [("smallcnn", 128), ("resnet18", 512)])
def test_model_gives_logits_and_an_8x8_final_map_at_64_px(name: str, channels: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, 3, 64).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), layer=model.stage_names[-2])
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 3)
    assert out.features.shape == (2, channels, 8, 8)
    assert out.layer is not None and out.layer.shape[0] == 2 and out.layer.shape[-1] == 16


def test_forward_captures_no_layer_unless_asked() -> None:
    model = create_model("smallcnn", 2, 32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).layer is None


def test_cam_spatial_mean_plus_head_bias_equals_the_logit() -> None:
    torch.manual_seed(0)
    model = create_model("smallcnn", 3, 64).eval()
    with torch.no_grad():
        out = model(torch.randn(4, 3, 64, 64))
        for cls in range(3):
            classes = torch.full((4,), cls)
            cam = model.class_activation_map(out.features, classes)
            assert cam.shape == (4, 8, 8)
            torch.testing.assert_close(
                cam.mean(dim=(1, 2)) + model.head.bias[cls], out.logits[:, cls], atol=1e-5, rtol=1e-5
            )


def _torchvision_name(key: str) -> str:
    """Where a torchvision ResNet key lives in our model (written out here, independently of the loader)."""
    for old, new in (("conv1.", "stages.stem.0."), ("bn1.", "stages.stem.1."), ("fc.", "head.")):
        if key.startswith(old):
            return new + key[len(old) :]
    return "stages." + key


def test_torchvision_resnet18_weights_load_except_head_and_7x7_stem(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None, num_classes=1000).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(source, path)
    torch.manual_seed(2)
    fresh = create_model("resnet18", 2, 64).state_dict()

    torch.manual_seed(2)
    model = create_model("resnet18", 2, 64, weights=path)
    loaded = model.state_dict()

    skipped = {"conv1.weight", "fc.weight", "fc.bias"}
    for key, value in source.items():
        ours = _torchvision_name(key)
        assert ours in loaded, key
        if key in skipped:
            assert loaded[ours].shape != value.shape
            torch.testing.assert_close(loaded[ours], fresh[ours])  # left as initialized
        else:
            torch.testing.assert_close(loaded[ours], value, rtol=0, atol=0)
    assert loaded["stages.stem.0.weight"].shape == (64, 3, 3, 3)


def test_torchvision_weights_load_the_7x7_stem_on_a_large_input_model(tmp_path: Path) -> None:
    source = torchvision.models.resnet18(weights=None, num_classes=1000).state_dict()
    torch.save(source, tmp_path / "resnet18.pth")
    model = create_model("resnet18", 2, 224, weights=tmp_path / "resnet18.pth")
    torch.testing.assert_close(model.state_dict()["stages.stem.0.weight"], source["conv1.weight"], rtol=0, atol=0)


def test_own_checkpoint_loads_with_another_head_and_from_a_ddp_wrapper(tmp_path: Path) -> None:
    trained = create_model("smallcnn", 3, 32)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}
    torch.save(wrapped, tmp_path / "ours.pt")
    model = create_model("smallcnn", 2, 32, weights=tmp_path / "ours.pt")
    for key, value in model.state_dict().items():
        if key.startswith("head."):
            assert value.shape[0] == 2
        else:
            torch.testing.assert_close(value, trained.state_dict()[key], rtol=0, atol=0)


def test_weights_of_another_architecture_raise_value_error_naming_missing_keys(tmp_path: Path) -> None:
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match=r"missing \['stages\.layer1\.2\."):
        create_model("resnet34", 2, 64, weights=tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match=r"missing \['stages\.stage1"):
        create_model("smallcnn", 2, 64, weights=tmp_path / "resnet18.pth")


def test_weights_with_mismatched_shapes_raise_value_error(tmp_path: Path) -> None:
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(ValueError, match="do not fit"):
        create_model("resnet18", 2, 64, weights=tmp_path / "resnet50.pth")


def test_missing_weights_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such weights file"):
        create_model("smallcnn", 2, 64, weights=tmp_path / "nowhere.pt")


def test_unknown_model_name_raises_value_error_listing_the_names() -> None:
    with pytest.raises(ValueError, match="vgg11") as caught:
        create_model("vgg11", 2)
    for name in MODEL_NAMES:
        assert name in str(caught.value)


# -- losses ----------------------------------------------------------------------------------------


INSIDE_CELL, OUTSIDE_CELL = (1, 1), (6, 6)


def hand_made_evidence(model, labels: torch.Tensor, cells: list[list[tuple[tuple[int, int], float]]]) -> ModelOutput:
    """Features whose class-margin CAM is ``sign * |margin|^2`` at the given 8 x 8 cells, zero elsewhere."""
    margin = margin_weights(model, labels).detach()
    features = torch.zeros(len(labels), margin.shape[1], 8, 8)
    for b, spots in enumerate(cells):
        for (row, col), sign in spots:
            features[b, :, row, col] = sign * margin[b]
    return ModelOutput(logits=torch.zeros(len(labels), model.head.out_features), features=features)


def top_left_masks(batch: int, size: int = 64) -> torch.Tensor:
    masks = torch.zeros(batch, 1, size, size)
    masks[:, :, : size // 2, : size // 2] = 1  # cells (0..3, 0..3) of the 8 x 8 map
    return masks


def scalar(tensor: torch.Tensor) -> float:
    return float(tensor.detach())


@pytest.fixture
def smallcnn():
    torch.manual_seed(0)
    return create_model("smallcnn", 2, 64)


def test_margin_weights_of_two_classes_are_true_minus_other_head_row(smallcnn) -> None:
    w = smallcnn.head.weight
    torch.testing.assert_close(margin_weights(smallcnn, torch.tensor([0, 1])), torch.stack([w[0] - w[1], w[1] - w[0]]))


def test_cam_penalty_is_zero_for_evidence_inside_the_mask_and_one_outside(smallcnn) -> None:
    labels = torch.tensor([0, 1])
    batch = Batch(torch.zeros(2, 3, 64, 64), labels, top_left_masks(2), torch.tensor([True, True]))
    inside = hand_made_evidence(smallcnn, labels, [[(INSIDE_CELL, 1.0)], [(INSIDE_CELL, 1.0)]])
    outside = hand_made_evidence(smallcnn, labels, [[(OUTSIDE_CELL, 1.0)], [(OUTSIDE_CELL, 1.0)]])
    penalty = CamPenalty(weight=1.0)
    assert scalar(penalty(smallcnn, inside, batch)) == pytest.approx(0.0, abs=1e-4)
    assert scalar(penalty(smallcnn, outside, batch)) == pytest.approx(1.0, abs=1e-4)


def test_cam_penalty_also_penalizes_negative_evidence_outside_the_mask(smallcnn) -> None:
    """Evading a positive-only penalty: positive evidence inside, the decision made by negative evidence outside."""
    labels = torch.tensor([0, 1])
    batch = Batch(torch.zeros(2, 3, 64, 64), labels, top_left_masks(2), torch.tensor([True, True]))
    negative_outside = hand_made_evidence(smallcnn, labels, [[(OUTSIDE_CELL, -1.0)], [(OUTSIDE_CELL, -1.0)]])
    mixed = hand_made_evidence(smallcnn, labels, [[(INSIDE_CELL, 1.0), (OUTSIDE_CELL, -1.0)]] * 2)
    penalty = CamPenalty(weight=1.0)
    assert scalar(penalty(smallcnn, negative_outside, batch)) == pytest.approx(1.0, abs=1e-4)
    assert scalar(penalty(smallcnn, mixed, batch)) == pytest.approx(0.5, abs=1e-4)


def test_cam_penalty_ignores_samples_without_a_mask(smallcnn) -> None:
    labels = torch.tensor([0, 1])
    evidence = hand_made_evidence(smallcnn, labels, [[(INSIDE_CELL, 1.0)], [(OUTSIDE_CELL, 1.0)]])
    batch = Batch(torch.zeros(2, 3, 64, 64), labels, top_left_masks(2), torch.tensor([True, False]))
    assert scalar(CamPenalty(1.0)(smallcnn, evidence, batch)) == pytest.approx(0.0, abs=1e-4)


def test_outside_share_without_any_mask_is_zero_and_still_differentiable() -> None:
    evidence = torch.randn(3, 8, 8, requires_grad=True)
    value = outside_share(evidence, torch.zeros(3, 1, 64, 64), torch.zeros(3, dtype=torch.bool))
    assert scalar(value) == 0.0
    value.backward()
    assert evidence.grad is not None and torch.all(evidence.grad == 0)


def guided_batch(size: int = 32, n: int = 4) -> Batch:
    split = make_split(n, size)
    return Batch(split.images.clone(), split.labels, split.guides, split.has_guide)


@pytest.mark.parametrize("name", ["gradcam", "rrr"])
def test_gradient_penalties_are_finite_and_reach_the_first_layer(name: str) -> None:
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 32)
    objective = build_objective(name, 1.0, model)
    (penalty,) = objective.penalties
    if name == "gradcam":
        assert objective.layer == model.stage_names[-2]
    batch = guided_batch()
    if penalty.needs_input_grad:
        batch.images.requires_grad_(True)
    out = model(batch.images, layer=objective.layer)
    value = penalty(model, out, batch)
    assert math.isfinite(scalar(value)) and scalar(value) > 0
    first = model.stages["stage1"][0].weight
    (grad,) = torch.autograd.grad(value, [first])
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0

    total, logits, parts = objective.loss(model, guided_batch())
    assert logits.shape == (4, 2) and set(parts) == {"ce", name}
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_rrr_penalty_is_zero_when_the_mask_covers_the_whole_image() -> None:
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 32)
    batch = guided_batch()
    batch.masks = torch.ones_like(batch.masks)
    batch.images.requires_grad_(True)
    (penalty,) = build_objective("rrr", 1.0, model).penalties
    assert scalar(penalty(model, model(batch.images), batch)) == 0.0


def constant_batch(has_mask: list[bool], size: int = 8) -> Batch:
    """Sample i is filled with the value i + 1; masks are the top-left quarter."""
    n = len(has_mask)
    images = (torch.arange(n, dtype=torch.float32) + 1)[:, None, None, None].expand(n, 3, size, size).clone()
    masks = torch.zeros(n, 1, size, size)
    masks[:, :, : size // 2, : size // 2] = 1
    flags = torch.tensor(has_mask)
    return Batch(images, torch.zeros(n, dtype=torch.long), masks * flags[:, None, None, None], flags)


def always_swap() -> BackgroundSwap:
    swap = BackgroundSwap()
    swap.rate = 1.0
    return swap


def test_bgswap_keeps_the_masked_object_and_takes_the_background_from_a_batch_sample() -> None:
    batch = constant_batch([True] * 6)
    swapped = always_swap()(batch, torch.Generator().manual_seed(0))
    values = set(range(1, 7))
    for i in range(6):
        inside, outside = swapped.images[i, :, :4, :4], swapped.images[i, :, 4:, 4:]
        assert torch.all(inside == i + 1)
        background = swapped.images[i][(batch.masks[i].expand(3, -1, -1) == 0)]
        assert len(set(background.unique().tolist())) == 1
        assert int(outside[0, 0, 0]) in values
    torch.testing.assert_close(swapped.masks, batch.masks)
    torch.testing.assert_close(swapped.labels, batch.labels)


def test_bgswap_leaves_unmasked_and_unchosen_samples_untouched() -> None:
    for seed in range(5):
        batch = constant_batch([True, True, False, False, False, False])
        original = batch.images.clone()
        swapped = always_swap()(batch, torch.Generator().manual_seed(seed))
        assert torch.equal(swapped.images[2:], original[2:]), f"seed {seed}: a sample without a mask was changed"
    never = BackgroundSwap()
    never.rate = 0.0
    batch = constant_batch([True] * 6)
    original = batch.images.clone()
    assert torch.equal(never(batch, torch.Generator().manual_seed(0)).images, original)


def test_bgswap_always_takes_the_background_from_another_sample() -> None:
    for seed in range(20):
        batch = constant_batch([True] * 4)
        swapped = always_swap()(batch, torch.Generator().manual_seed(seed))
        for i in range(4):
            assert int(swapped.images[i, 0, -1, -1]) != i + 1, f"seed {seed}: sample {i} kept its background"


def test_bgswap_with_a_single_sample_or_no_mask_changes_nothing() -> None:
    for batch in (constant_batch([True]), constant_batch([False, False, False])):
        original = batch.images.clone()
        assert torch.equal(always_swap()(batch, torch.Generator().manual_seed(0)).images, original)


def test_build_objective_parses_none_and_combinations_and_gives_each_penalty_the_weight(smallcnn) -> None:
    plain = build_objective("none", 0.3, smallcnn)
    assert plain.name == "none" and not plain.penalties and not plain.augmentations
    combined = build_objective("bgswap+cam", 0.3, smallcnn)
    assert combined.name == "bgswap+cam"
    assert [type(a) for a in combined.augmentations] == [BackgroundSwap]
    assert [type(p) for p in combined.penalties] == [CamPenalty]
    assert combined.penalties[0].weight == 0.3
    everything = build_objective("cam+gradcam+rrr", 2.5, smallcnn)
    assert [p.weight for p in everything.penalties] == [2.5, 2.5, 2.5]


def test_objective_loss_adds_the_weighted_penalty_to_the_cross_entropy() -> None:
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 32).eval()  # eval: the two forwards below see the same BatchNorm
    objective = build_objective("cam", 0.3, model)
    total, _, parts = objective.loss(model, guided_batch())
    assert scalar(total) == pytest.approx(scalar(parts["ce"]) + 0.3 * scalar(parts["cam"]), rel=1e-5)
    assert scalar(parts["cam"]) > 0


def test_build_objective_rejects_unknown_loss_listing_the_known_ones(smallcnn) -> None:
    with pytest.raises(ValueError, match="'dropout'") as caught:
        build_objective("bgswap+dropout", 1.0, smallcnn)
    for name in ["none", *PENALTIES, *AUGMENTATIONS]:
        assert name in str(caught.value)


# -- evaluation ------------------------------------------------------------------------------------


def test_group_accuracy_reports_overall_per_group_and_worst_group() -> None:
    split = make_split(8)
    split.labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])
    split.groups = torch.tensor([0, 0, 0, 2, 2, 3, 3, 3])  # group 1 has no image
    predictions = torch.tensor([0, 0, 1, 1, 0, 1, 1, 1])
    metrics = group_accuracy(predictions, split)
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["per_group"] == pytest.approx({GROUP_NAMES[0]: 2 / 3, GROUP_NAMES[2]: 0.5, GROUP_NAMES[3]: 1.0})
    assert metrics["worst_group"] == pytest.approx(0.5)
    assert metrics["mean_group"] == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)


def object_square(size: int = 16) -> torch.Tensor:
    gt = torch.zeros(1, 1, size, size)
    gt[..., 4:12, 4:12] = 1
    return gt


def test_cam_peaked_on_the_object_scores_full_energy_and_pointing() -> None:
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    cam = torch.exp(-((ys - 7.5) ** 2 + (xs - 7.5) ** 2) / (2 * 1.5**2))[None]
    quality = attention_quality(cam, object_square())
    assert quality["energy_in_mask"] > 0.95
    assert quality["pointing_game"] == 1.0
    assert 0.0 < quality["cam_iou"] <= 1.0
    exact = attention_quality(object_square()[:, 0] * 2.0, object_square())
    assert exact == pytest.approx({"energy_in_mask": 1.0, "pointing_game": 1.0, "cam_iou": 1.0})


def cam_hot_on_pixel_0_0() -> torch.Tensor:
    cam = object_square()[:, 0].clone()
    cam[0, 0, 0] = 100.0
    return cam


def ignore_pixel_0_0() -> torch.Tensor:
    gt = object_square()
    gt[..., 0, 0] = -1
    return gt


def test_energy_and_pointing_leave_ignore_pixels_out() -> None:
    ignored = attention_quality(cam_hot_on_pixel_0_0(), ignore_pixel_0_0())
    assert ignored["energy_in_mask"] == pytest.approx(1.0) and ignored["pointing_game"] == 1.0
    counted = attention_quality(cam_hot_on_pixel_0_0(), object_square())  # the same pixel as background counts
    assert counted["pointing_game"] == 0.0 and counted["energy_in_mask"] < 0.5


def test_cam_iou_leaves_ignore_pixels_out() -> None:
    assert attention_quality(cam_hot_on_pixel_0_0(), ignore_pixel_0_0())["cam_iou"] == pytest.approx(1.0)


def test_attention_quality_skips_images_without_an_object() -> None:
    empty = torch.zeros(1, 1, 16, 16)
    assert all(math.isnan(v) for v in attention_quality(torch.rand(1, 16, 16), empty).values())


# -- tensors ---------------------------------------------------------------------------------------


def assert_same_split(loaded: SplitTensors, original: SplitTensors) -> None:
    assert (denormalize(loaded.images) - denormalize(original.images)).abs().max() <= 1 / 255
    assert (loaded.guides - original.guides).abs().max() <= 1 / 255
    assert torch.equal(loaded.gt, original.gt)
    assert torch.equal(loaded.labels, original.labels) and torch.equal(loaded.groups, original.groups)
    assert torch.equal(loaded.has_guide, original.has_guide)
    assert loaded.names == original.names and loaded.class_names == original.class_names
    assert loaded.group_names == original.group_names


def test_splits_file_round_trips_within_one_grey_level(tmp_path: Path) -> None:
    splits = make_splits(12, 6)
    splits["train"].guides = torch.rand_like(splits["train"].guides)  # soft, like a crowd mask
    save_splits(splits, tmp_path / "splits.pt")
    loaded = load_splits_file(tmp_path / "splits.pt")
    assert set(loaded) == {"train", "val", "test"}
    for name, split in splits.items():
        assert_same_split(loaded[name], split)
    assert not list(tmp_path.glob("*.tmp"))


def test_experiment_tensors_keep_each_guides_training_masks(tmp_path: Path) -> None:
    gt = make_splits(12, 6)
    none = {name: copy.copy(split) for name, split in gt.items()}
    none["train"] = copy.copy(gt["train"])
    none["train"].guides = torch.zeros_like(gt["train"].guides)
    none["train"].has_guide = torch.zeros_like(gt["train"].has_guide)
    save_experiment_tensors({"none": none, "gt": gt}, tmp_path / "experiment.pt")
    loaded = load_experiment_tensors(tmp_path / "experiment.pt")
    assert list(loaded) == ["none", "gt"]
    for guide, splits in (("none", none), ("gt", gt)):
        for name in ("train", "val", "test"):
            assert_same_split(loaded[guide][name], splits[name])
    assert not loaded["none"]["train"].has_guide.any() and loaded["gt"]["train"].has_guide.all()
    assert [p.name for p in tmp_path.iterdir()] == ["experiment.pt"]


def test_experiment_tensors_load_without_writing_beside_the_file(tmp_path: Path) -> None:
    """Several GPU jobs load one file at once: a load that wrote a scratch file beside it would collide."""
    save_experiment_tensors({"gt": make_splits(12, 6)}, tmp_path / "experiment.pt")
    (tmp_path / "experiment.splits.tmp").mkdir()  # what an earlier version wrote to, now in the way
    loaded = load_experiment_tensors(tmp_path / "experiment.pt")
    assert list(loaded) == ["gt"] and len(loaded["gt"]["train"]) == 12


def test_guided_dataset_yields_image_label_group_guide_and_flag() -> None:
    split = make_split(4)
    image, label, group, guide, flag = GuidedDataset(split)[3]
    assert image.shape == (3, 32, 32) and guide.shape == (1, 32, 32)
    assert int(label) == 1 and int(group) == int(split.groups[3]) and bool(flag)


# -- data from a project ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crowd_project(tmp_path_factory, benchmark_files):
    """12 built-in images of 32 px: proposed, answered by simulated workers, masks built."""
    images, labels, masks = benchmark_files(12, 32)
    config = ProjectConfig(name="crowd", target="object", images_dir=str(images), masks_dir=str(masks))
    project = Project.create(tmp_path_factory.mktemp("train-data") / "crowd", config)
    add_images(project, load_folder_dataset(images, labels, masks).records)
    assert not propose(project).problems
    run_simulation(project, 6)
    build_masks(project)
    yield project
    project.close()


def test_gt_guide_puts_the_ground_truth_object_on_training_images_only(crowd_project) -> None:
    splits = load_splits(crowd_project, "gt", 32)
    assert set(splits) == {"train", "val", "test"}
    assert sum(len(s) for s in splits.values()) == 12
    train = splits["train"]
    assert train.has_guide.all()
    assert torch.equal(train.guides, (train.gt == 1).float())
    assert all((train.gt[i] == 1).any() for i in range(len(train)))
    for held_out in (splits["val"], splits["test"]):
        assert not held_out.has_guide.any() and not held_out.guides.any()
        assert (held_out.gt == 1).any()  # evaluation still sees the ground truth
    assert train.class_names == ["blob", "star"] and len(train.group_names) == 4
    assert train.images.shape[1:] == (3, 32, 32)


def test_none_guide_gives_no_masks(crowd_project) -> None:
    for split in load_splits(crowd_project, "none", 32).values():
        assert not split.has_guide.any() and not split.guides.any()


def test_patch_guide_uses_the_crowd_soft_masks(crowd_project) -> None:
    with crowd_project.sessions() as session:
        files = dict(
            session.execute(
                select(ImageRow.path, MaskRow.file).join(
                    MaskRow, (MaskRow.image_id == ImageRow.id) & (MaskRow.source == "patch")
                )
            ).all()
        )
    splits = load_splits(crowd_project, "patch", 32)
    train = splits["train"]
    assert train.has_guide.all()
    for i, name in enumerate(train.names):
        (soft_file,) = [f for path, f in files.items() if Path(path).name == name]
        soft = torch.from_numpy(np.asarray(Image.open(soft_file), dtype=np.float32) / 255.0)
        torch.testing.assert_close(train.guides[i, 0], soft, atol=1 / 255, rtol=0)
    assert not torch.equal(train.guides, (train.gt == 1).float())  # the crowd's mask, not the truth
    assert not splits["val"].has_guide.any() and not splits["test"].has_guide.any()


def test_saliency_guide_gives_binary_masks_on_training_images(crowd_project) -> None:
    splits = load_splits(crowd_project, "saliency", 32)
    assert splits["train"].has_guide.any()
    assert not splits["val"].has_guide.any() and not splits["test"].has_guide.any()


def test_unknown_guide_raises_value_error_listing_the_guides(crowd_project) -> None:
    with pytest.raises(ValueError, match="polygons") as caught:
        load_splits(crowd_project, "polygons", 32)
    for guide in GUIDES:
        assert guide in str(caught.value)


def test_patch_guide_before_masks_exist_says_to_run_masks(make_project) -> None:
    project = make_project(12, 32, proposed=False)
    with pytest.raises(ValueError, match="crowdpatch masks"):
        load_splits(project, "patch", 32)


# -- trainer ---------------------------------------------------------------------------------------


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig(
        **{
            "guide": "gt",
            "loss": "bgswap+cam",
            "epochs": 2,
            "batch_size": 16,
            "image_size": 32,
            "device": "cpu",
            **changes,
        }
    )


def test_tiny_fit_reports_val_and_test_metrics_and_two_epochs_of_history() -> None:
    result = fit(tiny_config(), make_splits())
    assert result is not None and result.device == "cpu"
    assert [record["epoch"] for record in result.history] == [1, 2]
    assert {"ce", "cam", "val_accuracy", "val_worst_group"} <= set(result.history[0])
    for metrics in (result.val, result.test):
        assert 0.0 <= metrics["worst_group"] <= 1.0 and 0.0 <= metrics["accuracy"] <= 1.0
        assert 0.0 <= metrics["energy_in_mask"] <= 1.0
        assert set(metrics["per_group"]) == set(GROUP_NAMES)
    model = create_model("smallcnn", 2, 32)
    model.load_state_dict(result.state_dict)
    assert evaluate(model, make_splits()["test"], torch.device("cpu"))["accuracy"] == pytest.approx(
        result.test["accuracy"]
    )


def test_fit_selects_the_epoch_with_the_best_val_worst_group() -> None:
    result = fit(tiny_config(epochs=3), make_splits())
    scores = [record["val_worst_group"] for record in result.history]
    expected = max(range(len(scores)), key=lambda i: (scores[i], i)) + 1
    assert result.best_epoch == expected
    assert result.val["worst_group"] == pytest.approx(scores[expected - 1])


def test_fit_keeps_the_weights_of_the_selected_epoch_and_prefers_the_later_on_ties(monkeypatch) -> None:
    scripted = iter([0.25, 0.75, 0.75, 0.5])
    snapshots = []

    def scripted_evaluate(model, split, device):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        score = next(scripted, 0.0)
        return {"accuracy": score, "worst_group": score}

    monkeypatch.setattr(trainer_module, "evaluate", scripted_evaluate)
    result = fit(tiny_config(epochs=4), make_splits())
    assert result.best_epoch == 3
    for key, value in result.state_dict.items():
        assert torch.equal(value, snapshots[2][key]), key
    assert not all(torch.equal(snapshots[1][k], snapshots[2][k]) for k in snapshots[2])


def test_same_seed_gives_the_same_history_on_the_cpu() -> None:
    first = fit(tiny_config(), make_splits())
    second = fit(tiny_config(), make_splits())
    assert first.history == second.history
    assert first.best_epoch == second.best_epoch
    for key, value in first.state_dict.items():
        assert torch.equal(value, second.state_dict[key]), key
    other = fit(tiny_config(seed=1, epochs=1), make_splits())
    assert other.history[0]["ce"] != first.history[0]["ce"]


def test_guide_none_trains_plain_cross_entropy_whatever_the_loss() -> None:
    result = fit(tiny_config(guide="none", loss="bgswap+cam", epochs=1), make_splits())
    assert set(result.history[0]) == {"epoch", "ce", "val_accuracy", "val_worst_group"}


def test_asking_for_cuda_without_a_gpu_is_a_value_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        fit(tiny_config(device="cuda", epochs=1), make_splits())
