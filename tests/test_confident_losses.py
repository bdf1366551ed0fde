"""Losses that trust only what a soft crowd mask is sure of, and training on another project's masks."""

from __future__ import annotations

import pytest
import torch

from crowdpatch.train.data import with_masks_of
from crowdpatch.train.losses import Batch, CamPenalty, ErodedSwap, FarCamPenalty, build_objective, dilate, erode
from crowdpatch.train.models import ModelOutput, create_model
from crowdpatch.train.tensors import SplitTensors


def square_masks(batch: int, size: int = 64, top: int = 16, side: int = 32) -> torch.Tensor:
    masks = torch.zeros(batch, 1, size, size)
    masks[:, :, top : top + side, top : top + side] = 1
    return masks


def test_erode_and_dilate_move_a_square_edge_by_the_margin_of_the_image_side() -> None:
    masks = square_masks(1)  # 32 px square at 16..47 on a 64 px image; 5 % of 64 px = 3 px
    core, grown = erode(masks, 0.05), dilate(masks, 0.05)
    assert int(core.sum()) == 26 * 26 and bool(core[0, 0, 19:45, 19:45].all())
    assert int(grown.sum()) == 38 * 38 and bool(grown[0, 0, 13:51, 13:51].all())


def test_erodeswap_pastes_only_the_core_and_the_rim_takes_the_other_background() -> None:
    images = torch.stack([torch.full((3, 64, 64), 1.0), torch.full((3, 64, 64), 2.0)])
    batch = Batch(images, torch.tensor([0, 1]), square_masks(2), torch.tensor([True, True]))
    swap = ErodedSwap()
    swap.rate = 1.0
    swapped = swap(batch, torch.Generator().manual_seed(0))
    assert torch.all(swapped.images[0, :, 19:45, 19:45] == 1.0)  # the core is the object's own
    assert torch.all(swapped.images[0, :, 16:19, 16:48] == 2.0)  # the rim: the other image's background
    assert torch.all(swapped.images[0, :, :16] == 2.0)
    torch.testing.assert_close(swapped.masks, batch.masks)  # the penalty still sees the crowd's mask


def test_camfar_leaves_evidence_next_to_the_mask_unpenalized_but_not_evidence_far_away() -> None:
    torch.manual_seed(0)
    model = create_model("smallcnn", 2, 64)
    labels = torch.tensor([0])
    margin = (model.head.weight[0] - model.head.weight[1]).detach()
    masks = torch.zeros(1, 1, 64, 64)
    masks[:, :, :34, :32] = 1  # cells (0..3, 0..3) of the 8 x 8 map and a sliver of row 4
    batch = Batch(torch.zeros(1, 3, 64, 64), labels, masks, torch.tensor([True]))

    def evidence_at(row: int, col: int) -> ModelOutput:
        features = torch.zeros(1, margin.shape[0], 8, 8)
        features[0, :, row, col] = margin
        return ModelOutput(torch.zeros(1, 2), features)

    beside, far = evidence_at(4, 1), evidence_at(7, 7)
    with torch.no_grad():
        assert float(FarCamPenalty(1.0)(model, beside, batch)) == pytest.approx(0.0, abs=1e-4)
        assert float(CamPenalty(1.0)(model, beside, batch)) > 0.5  # the plain penalty punishes the edge
        assert float(FarCamPenalty(1.0)(model, far, batch)) == pytest.approx(1.0, abs=1e-4)
    assert build_objective("erodeswap+camfar", 0.5, model).name == "erodeswap+camfar"


def split_named(names: list[str], guided: list[bool], value: float) -> SplitTensors:
    n = len(names)
    return SplitTensors(
        images=torch.zeros(n, 3, 4, 4),
        labels=torch.zeros(n, dtype=torch.long),
        groups=torch.zeros(n, dtype=torch.long),
        guides=torch.tensor(guided, dtype=torch.float32)[:, None, None, None].expand(n, 1, 4, 4) * value,
        has_guide=torch.tensor(guided),
        gt=torch.zeros(n, 1, 4, 4),
        class_names=["a"],
        group_names=["a"],
        names=names,
    )


def test_another_projects_masks_are_matched_to_the_training_images_by_file_name() -> None:
    mine = {
        "train": split_named(["a.png", "b.png", "c.png"], [False] * 3, 0.0),
        "test": split_named(["t.png"], [False], 0),
    }
    theirs = {"train": split_named(["c.png", "x.png", "a.png", "b.png"], [True, True, True, False], 0.7)}
    combined = with_masks_of(mine, theirs)
    assert combined["train"].has_guide.tolist() == [True, False, True]  # b.png: they have no mask for it
    assert combined["train"].guides[:, 0, 0, 0].tolist() == pytest.approx([0.7, 0.0, 0.7])
    assert combined["test"] is mine["test"] and not mine["train"].has_guide.any()
    with pytest.raises(ValueError, match="no mask for any training image"):
        with_masks_of(mine, {"train": split_named(["x.png"], [True], 1.0)})
