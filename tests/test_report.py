"""Behaviour of the HTML report: its headline, sections, sample choice and per-sample panels."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from crowdpatch.boxes import Box
from crowdpatch.masks.build import MaskBuilder, build_masks
from crowdpatch.masks.metrics import mask_iou
from crowdpatch.patches.rasterize import binarize
from crowdpatch.report import AskedWindow, SampleFigure, TrainingFigures, pick_samples, render_sample, write_report
from crowdpatch.report.figures import MIN_PANEL_PX
from crowdpatch.simulate.run import run_simulation
from crowdpatch.store.models import MaskRow
from crowdpatch.summary import headline
from crowdpatch.workflow import sample_figures

SIZE = 96


def make_sample(
    name: str = "horse_001", *, with_gt: bool = True, height: int = SIZE, width: int = SIZE
) -> SampleFigure:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:height, :width]
    obj = ((xx - 50) / 30.0) ** 2 + ((yy - 45) / 18.0) ** 2 < 1
    image = rng.integers(60, 160, size=(height, width, 3), dtype=np.uint8)
    image[obj] = (150, 90, 40)
    region = Box(14, 20, 88, 72)
    windows = [
        AskedWindow(Box(14 + 18 * i, 20 + 13 * j, 51 + 18 * i, 46 + 13 * j), level=1, posterior=p)
        for i, j, p in [(0, 0, 0.1), (1, 1, 0.95), (2, 2, 0.4)]
    ] + [AskedWindow(Box(40 + 5 * k, 35, 58 + 5 * k, 48), level=2, posterior=k / 5) for k in range(6)]
    gt = obj.astype(np.uint8)
    gt[0:3, :] = 255
    return SampleFigure(
        name=name,
        image=image,
        regions=[region],
        windows=windows,
        mask=np.clip(obj * 0.9, 0, 1).astype(float),
        gt_mask=gt if with_gt else None,
        iou=0.734 if with_gt else None,
        saliency_iou=0.41 if with_gt else None,
    )


SUMMARY = {
    "times_are": "modeled",
    "images": 12,
    "answers": 80,
    "mean_iou": 0.712345,
    "modeled_seconds_per_image": {"patch": 93.456, "polygon": 79.0},
    "speedup_vs_polygon": 79.0 / 93.456,
    "mask_iou": {"patch": 0.66, "saliency": 0.55, "polygon": None},
    "settings": {"planner": "fixed", "presentation": "grid", "grid_size": 8, "budget_seconds": None},
}


def grouped(*samples: SampleFigure) -> list[tuple[str, SampleFigure]]:
    return [("best", sample) for sample in samples]


def test_report_writes_three_panels_per_sample_and_two_without_ground_truth(tmp_path):
    page = write_report(
        tmp_path / "report", "Run 1", SUMMARY, grouped(make_sample("a"), make_sample("b", with_gt=False))
    )
    assert page == tmp_path / "report" / "index.html"
    pngs = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert pngs == ["a-asked.png", "a-mask.png", "a-truth.png", "b-asked.png", "b-mask.png"]
    text = page.read_text(encoding="utf-8")
    assert 'src="figures/a-mask.png"' in text and 'src="figures/b-asked.png"' in text
    assert "(c) ground truth" in text and text.count("(b) final mask") == 2
    assert text.count("orange = ignored band") == 1  # sample a's ground truth has an ignore band
    assert not list((tmp_path / "report").glob("**/*.tmp"))


def test_report_starts_with_the_headline_and_keeps_raw_keys_in_a_closed_details_at_the_bottom(tmp_path):
    text = write_report(tmp_path, "Run", SUMMARY, grouped(make_sample())).read_text(encoding="utf-8")
    body = text[text.index("<body>") :]
    first_paragraph = re.search(r"<p[^>]*>(.*?)</p>", body).group(1)
    assert first_paragraph == headline(SUMMARY)
    assert first_paragraph.startswith("Crowd masks: IoU 0.66 at 93 s of modeled human time per image")
    details = body.index("<details>")
    assert body.index("modeled_seconds_per_image.patch") > details and body.index("mean_iou") > details
    assert body.index("<section") < details  # the samples come before the raw keys
    assert "0.712" in body and "0.712345" not in body


def test_report_has_a_cost_figure_with_every_planner_when_there_is_an_iou(tmp_path):
    summary = {
        **SUMMARY,
        "adaptive": {
            "mask_iou": 0.6,
            "modeled_seconds_per_image": 40.0,
            "speedup_vs_polygon": 2.0,
            "answers_per_image": 9.0,
        },
    }
    text = write_report(tmp_path, "Run", summary, []).read_text(encoding="utf-8")
    assert 'src="cost.png"' in text and (tmp_path / "cost.png").stat().st_size > 0
    assert "crowd, adaptive planner" in text and "crowd, fixed planner" in text and "saliency alone" in text
    no_truth = {**SUMMARY, "mask_iou": {"patch": None, "saliency": None, "polygon": None}}
    text = write_report(tmp_path, "Run", no_truth, []).read_text(encoding="utf-8")
    assert "cost.png" not in text and not (tmp_path / "cost.png").exists()
    assert "no ground truth, so no IoU" in text


def test_report_shows_training_results_inline(tmp_path):
    summary = {
        **SUMMARY,
        "accuracy": {"none": {"mean": 0.6, "worst_group": 0.22}, "patch": {"mean": 0.98, "worst_group": 0.97}},
        "attention_energy_in_mask": {"none": 0.2, "patch": 0.7},
        "training": {"model": "smallcnn", "loss": "bgswap+cam", "epochs": 30, "image_size": 64},
    }
    training = TrainingFigures("experiment/worst_group.png", "experiment/cams.png", "experiment/index.html")
    text = write_report(tmp_path, "Run", summary, [], training=training).read_text(encoding="utf-8")
    assert "Training against the shortcut" in text
    assert '<img src="experiment/worst_group.png"' in text and '<img src="experiment/cams.png"' in text
    assert ">0.22<" in text and ">0.97<" in text and "worst group" in text


def test_report_escapes_names_titles_and_notes(tmp_path):
    evil = "<script>alert(1)</script>"
    page = write_report(tmp_path, f"title {evil}", SUMMARY, grouped(make_sample(evil)), notes=[f"note {evil}"])
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    figures = list((tmp_path / "figures").iterdir())
    assert len(figures) == 3 and all("<" not in f.name and "/" not in f.name for f in figures)


def test_report_says_how_times_were_obtained(tmp_path):
    assert re.search(
        r"Times in this report are MODELED", write_report(tmp_path, "Run", SUMMARY, []).read_text(encoding="utf-8")
    )
    assert "MEASURED" in write_report(tmp_path, "Run", {**SUMMARY, "times_are": "measured"}, []).read_text(
        encoding="utf-8"
    )
    assert "MIXED" in write_report(tmp_path, "Run", {**SUMMARY, "times_are": "mixed"}, []).read_text(encoding="utf-8")


@pytest.mark.parametrize("summary", [{"images": 3}, {"times_are": "guessed"}])
def test_report_refuses_times_that_are_neither_modeled_nor_measured(tmp_path, summary):
    with pytest.raises(ValueError, match="times_are"):
        write_report(tmp_path, "Run", summary, grouped(make_sample()))
    assert not (tmp_path / "index.html").exists()


def test_report_is_self_contained(tmp_path):
    text = write_report(tmp_path, "Run", SUMMARY, grouped(make_sample())).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text.lower()


def test_figures_with_duplicate_names_do_not_overwrite_each_other(tmp_path):
    write_report(tmp_path, "Run", SUMMARY, grouped(make_sample("x/y"), make_sample("x_y"), make_sample("X_Y")))
    assert len(list((tmp_path / "figures").glob("*.png"))) == 9


def test_a_second_report_removes_the_panels_of_samples_it_no_longer_shows(tmp_path):
    write_report(tmp_path, "Run", SUMMARY, grouped(make_sample("old")))
    write_report(tmp_path, "Run", SUMMARY, grouped(make_sample("new")))
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "new-asked.png",
        "new-mask.png",
        "new-truth.png",
    ]


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [(96, 96, (400, 400)), (60, 120, (400, 200)), (300, 900, (720, 240)), (640, 480, (480, 640))],
)
def test_panels_keep_the_photo_aspect_ratio_and_are_at_least_400_px_wide(tmp_path, height, width, expected):
    paths = render_sample(make_sample(height=height, width=width), tmp_path, "s")
    assert sorted(paths) == ["asked", "mask", "truth"]
    for path in paths.values():
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == expected and png.size[0] >= MIN_PANEL_PX


def test_mask_panel_is_bright_inside_the_mask_and_dim_outside(tmp_path):
    sample = make_sample()
    sample.image = np.full_like(sample.image, 200)
    sample.windows, sample.regions = [], []
    with Image.open(render_sample(sample, tmp_path, "s")["mask"]) as png:
        pixels = np.asarray(png.convert("L").resize((SIZE, SIZE), Image.NEAREST), dtype=float)
    inside = sample.mask > 0.5
    core = np.zeros_like(inside)
    core[40:50, 40:60] = True  # well inside the object, away from the outline
    assert pixels[core].mean() > 150 and pixels[~inside][:200].mean() < 100


def test_sample_without_windows_or_regions_renders(tmp_path):
    sample = make_sample()
    sample.windows, sample.regions = [], []
    for path in render_sample(sample, tmp_path, "empty").values():
        with Image.open(path) as png:
            png.verify()


def test_mismatched_mask_shape_is_rejected(tmp_path):
    sample = make_sample()
    sample.mask = np.zeros((SIZE, SIZE + 1))
    with pytest.raises(ValueError, match="mask"):
        render_sample(sample, tmp_path, "bad")


# -- which samples ---------------------------------------------------------------------------------


def test_pick_samples_shows_the_best_median_and_worst_iou():
    ious = [i / 20 for i in range(21)]  # 0.0 .. 1.0, index = 20 x IoU
    picked = pick_samples(ious, per_group=3)
    by_group = {group: [ious[i] for g, i in picked if g == group] for group in ("best", "median", "worst")}
    assert by_group["best"] == [1.0, 0.95, 0.9]
    assert by_group["median"] == [0.55, 0.5, 0.45]
    assert by_group["worst"] == [0.1, 0.05, 0.0]


def test_pick_samples_shows_each_image_once_when_there_are_few():
    picked = pick_samples([0.2, 0.9, 0.5, 0.7], per_group=3)
    assert sorted(i for _, i in picked) == [0, 1, 2, 3]
    assert [g for g, i in picked if i == 1] == ["best"] and [g for g, i in picked if i == 0] == ["worst"]


def test_pick_samples_without_ground_truth_shows_the_first_images_apart():
    assert pick_samples([None] * 20, per_group=2) == [("no ground truth", i) for i in range(6)]
    picked = pick_samples([0.5, None, 0.7], per_group=3)
    assert ("no ground truth", 1) in picked and len(picked) == 3


@pytest.mark.slow
def test_report_samples_show_the_refined_mask_that_was_scored_and_written(make_project):
    project = make_project(12, 64)
    run_simulation(project, 8)
    stats = build_masks(project, ())
    samples = sample_figures(project, stats)
    assert len(samples) == 9
    builder = MaskBuilder(project)
    differs = 0
    for _, sample in samples:
        stat = next(s for s in stats if s.name == sample.name)
        with project.sessions() as session:
            stored = session.scalar(
                select(MaskRow.file).where(MaskRow.image_id == stat.image_id, MaskRow.source == "patch")
            )
        with Image.open(stored) as png:
            assert np.array_equal(np.rint(sample.mask * 255), np.asarray(png, dtype=float))
        assert mask_iou(binarize(sample.mask, sample.threshold), sample.gt_mask) == pytest.approx(stat.iou, abs=0.01)
        differs += not np.allclose(sample.mask, builder.image_mask(stat.image_id).soft, atol=1 / 255)
    assert differs  # the crowd's blocky mask before refinement is not what the report shows
