"""Behaviour of the HTML report and its per-sample figures."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from crowdpatch.boxes import Box
from crowdpatch.report import AskedWindow, SampleFigure, render_sample, write_report

SIZE = 96


def make_sample(name: str = "horse_001", *, with_gt: bool = True, with_saliency: bool = True) -> SampleFigure:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    obj = ((xx - 50) / 30.0) ** 2 + ((yy - 45) / 18.0) ** 2 < 1
    image = rng.integers(60, 160, size=(SIZE, SIZE, 3), dtype=np.uint8)
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
        saliency=np.clip(obj * 0.8 + rng.random(obj.shape) * 0.2, 0, 1) if with_saliency else None,
        regions=[region],
        windows=windows,
        soft_mask=np.clip(obj * 0.9, 0, 1).astype(float),
        gt_mask=gt if with_gt else None,
        iou=0.734 if with_gt else None,
    )


SUMMARY = {
    "times_are": "modeled",
    "images": 12,
    "mean_iou": 0.712345,
    "modeled_seconds_per_image": {"patch": 93.456, "polygon": 79.0},
}


def test_report_writes_one_figure_per_sample(tmp_path):
    samples = [make_sample("a"), make_sample("b", with_gt=False)]
    page = write_report(tmp_path / "report", "Run 1", SUMMARY, samples)
    assert page == tmp_path / "report" / "index.html"
    pngs = sorted(p.name for p in (tmp_path / "report" / "figures").iterdir())
    assert pngs == ["a.png", "b.png"]
    text = page.read_text(encoding="utf-8")
    assert text.count("<img ") == 2
    assert 'src="figures/a.png"' in text and 'src="figures/b.png"' in text
    assert not list((tmp_path / "report").glob("**/*.tmp"))


def test_report_escapes_names_titles_and_notes(tmp_path):
    evil = "<script>alert(1)</script>"
    page = write_report(tmp_path, f"title {evil}", SUMMARY, [make_sample(evil)], notes=[f"note {evil}"])
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    figures = list((tmp_path / "figures").iterdir())
    assert len(figures) == 1 and "<" not in figures[0].name and "/" not in figures[0].name


def test_report_has_flattened_summary_times_word_and_notes(tmp_path):
    page = write_report(tmp_path, "Run", SUMMARY, [], notes=["depth 2", "3 votes"])
    text = page.read_text(encoding="utf-8")
    assert "modeled_seconds_per_image.patch" in text and "93.5" in text
    assert "modeled_seconds_per_image.polygon" in text and "79.0" in text
    assert "mean_iou" in text and "0.712" in text and "0.712345" not in text
    assert ">12<" in text
    assert re.search(r"Times in this report are MODELED", text)
    assert "<li>depth 2</li>" in text and "<li>3 votes</li>" in text


def test_report_says_measured_when_times_are_measured(tmp_path):
    page = write_report(tmp_path, "Run", {**SUMMARY, "times_are": "measured"}, [])
    assert "MEASURED" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("summary", [{"images": 3}, {"times_are": "guessed"}])
def test_report_refuses_times_that_are_neither_modeled_nor_measured(tmp_path, summary):
    with pytest.raises(ValueError, match="times_are"):
        write_report(tmp_path, "Run", summary, [make_sample()])
    assert not (tmp_path / "index.html").exists()


def test_report_is_self_contained(tmp_path):
    text = write_report(tmp_path, "Run", SUMMARY, [make_sample()]).read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "<script" not in text.lower()


def test_figures_with_duplicate_names_do_not_overwrite_each_other(tmp_path):
    write_report(tmp_path, "Run", SUMMARY, [make_sample("x/y"), make_sample("x_y"), make_sample("X_Y")])
    assert len(list((tmp_path / "figures").glob("*.png"))) == 3


def test_rendered_png_is_a_valid_image_of_reasonable_size(tmp_path):
    path = render_sample(make_sample(), tmp_path / "s.png")
    with Image.open(path) as png:
        png.verify()
    with Image.open(path) as png:
        width, height = png.size
        assert png.format == "PNG"
    assert 400 <= width <= 1200 and 120 <= height <= 400
    assert width > 2.5 * height


def test_sample_without_gt_or_saliency_renders_with_one_panel_fewer(tmp_path):
    full = render_sample(make_sample(), tmp_path / "full.png")
    bare = render_sample(make_sample(with_gt=False, with_saliency=False), tmp_path / "bare.png")
    with Image.open(full) as a, Image.open(bare) as b:
        assert b.size[0] < a.size[0] and b.size[1] == a.size[1]


def test_sample_without_windows_or_regions_renders(tmp_path):
    sample = make_sample()
    sample.windows, sample.regions = [], []
    with Image.open(render_sample(sample, tmp_path / "empty.png")) as png:
        png.verify()


def test_mismatched_mask_shape_is_rejected(tmp_path):
    sample = make_sample()
    sample.soft_mask = np.zeros((SIZE, SIZE + 1))
    with pytest.raises(ValueError, match="soft_mask"):
        render_sample(sample, tmp_path / "bad.png")
