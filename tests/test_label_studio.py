"""Label Studio interop: polygon and brush annotations to GT masks, masks to brush pre-annotations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("label_studio_converter", reason="the labelstudio extra is not installed")

from crowdpatch.datasets.label_studio import (  # noqa: E402
    decode_brush,
    encode_brush,
    export_tasks,
    import_masks,
    rasterize_polygon,
    task_image_stem,
)


def _polygon_task(task_id: int, image: str, points: list[list[float]], width: int = 8, height: int = 4) -> dict:
    return {
        "id": task_id,
        "data": {"image": image},
        "annotations": [
            {
                "id": task_id,
                "was_cancelled": False,
                "result": [
                    {
                        "id": "p1",
                        "type": "polygonlabels",
                        "from_name": "label",
                        "to_name": "image",
                        "original_width": width,
                        "original_height": height,
                        "image_rotation": 0,
                        "value": {"points": points, "polygonlabels": ["object"], "closed": True},
                    }
                ],
            }
        ],
    }


def test_polygon_rasterises_the_pixels_whose_centres_it_covers() -> None:
    # x from 25 % to 75 % of 8 px = 2..6, y from 0 % to 50 % of 4 px = 0..2: columns 2-5, rows 0-1.
    mask = rasterize_polygon([[25, 0], [75, 0], [75, 50], [25, 50]], width=8, height=4)
    expected = np.zeros((4, 8), dtype=bool)
    expected[0:2, 2:6] = True
    np.testing.assert_array_equal(mask, expected)


def test_polygon_triangle_keeps_only_centres_inside() -> None:
    # Right triangle (0,0)-(4,0)-(0,4) on a 4 x 4 image: centre (x+.5, y+.5) inside when x + y + 1 < 4.
    mask = rasterize_polygon([[0, 0], [100, 0], [0, 100]], width=4, height=4)
    ys, xs = np.mgrid[0:4, 0:4]
    np.testing.assert_array_equal(mask, xs + ys + 1 < 4)


def test_brush_rle_round_trip() -> None:
    rng = np.random.default_rng(0)
    mask = np.zeros((13, 21), dtype=bool)
    mask[2:9, 3:17] = True
    mask |= rng.random(mask.shape) < 0.05
    np.testing.assert_array_equal(decode_brush(encode_brush(mask), 21, 13), mask)


def test_import_writes_polygon_and_brush_masks_and_reports_empty_tasks(tmp_path: Path) -> None:
    brush = np.zeros((4, 8), dtype=bool)
    brush[1:3, 5:8] = True
    brush_task = {
        "id": 2,
        "data": {"image": "/data/local-files/?d=photos/cat%201.jpg"},
        "annotations": [
            {"id": 9, "was_cancelled": True, "result": []},
            {
                "id": 10,
                "result": [
                    {
                        "type": "brushlabels",
                        "original_width": 8,
                        "original_height": 4,
                        "value": {"format": "rle", "rle": encode_brush(brush), "brushlabels": ["object"]},
                    },
                    {"type": "choices", "value": {"choices": ["cat"]}},
                ],
            },
        ],
    }
    export = tmp_path / "project-1-at-2026.json"
    export.write_text(
        json.dumps(
            [
                _polygon_task(1, "http://host/images/dog.jpg", [[25, 0], [75, 0], [75, 50], [25, 50]]),
                brush_task,
                {"id": 3, "data": {"image": "http://host/images/empty.jpg"}, "annotations": []},
            ]
        )
    )
    written, problems = import_masks(export, tmp_path / "masks")
    assert sorted(p.name for p in written) == ["cat 1.png", "dog.png"]
    dog = np.asarray(Image.open(tmp_path / "masks" / "dog.png"))
    assert dog.dtype == np.uint8 and set(np.unique(dog)) == {0, 255}
    assert (dog == 255).sum() == 8 and dog[0, 2] == 255 and dog[2, 2] == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "masks" / "cat 1.png")) == 255, brush)
    assert [str(p) for p in problems] == ["project-1-at-2026.json task 3: no image or no brush/polygon annotation"]


def test_export_then_import_gives_the_same_masks(tmp_path: Path) -> None:
    masks = tmp_path / "masks"
    masks.mkdir()
    rng = np.random.default_rng(1)
    originals = {}
    for stem in ("a", "b"):
        binary = rng.random((10, 15)) < 0.3
        Image.fromarray(np.where(binary, 255, 0).astype(np.uint8)).save(masks / f"{stem}.png")
        originals[stem] = binary
    assert export_tasks(masks, "http://host/img", tmp_path / "tasks.json", label="bird") == 2
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert tasks[0]["data"]["image"] == "http://host/img/a.jpg"
    result = tasks[0]["predictions"][0]["result"][0]
    assert (result["type"], result["value"]["brushlabels"], result["original_width"]) == ("brushlabels", ["bird"], 15)
    # Label Studio exports what was pre-annotated and accepted under annotations.
    for task in tasks:
        task["annotations"] = task.pop("predictions")
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    written, problems = import_masks(tmp_path / "export.json", tmp_path / "back")
    assert not problems and len(written) == 2
    for stem, binary in originals.items():
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "back" / f"{stem}.png")) == 255, binary)


def test_task_image_stem_handles_urls_and_local_storage() -> None:
    assert task_image_stem({"data": {"image": "s3://bucket/x/y/img_7.png"}}) == "img_7"
    assert task_image_stem({"data": {"image": "/data/local-files/?d=a/b%20c.jpg"}}) == "b c"
    assert task_image_stem({"data": {"image": "/data/upload/3/1a2b3c4d-horse_01.jpg"}}) == "horse_01"


def test_cli_import_and_export(tmp_path: Path, invoke) -> None:
    export = tmp_path / "export.json"
    export.write_text(json.dumps([_polygon_task(1, "http://h/i/dog.jpg", [[0, 0], [100, 0], [100, 100]])]))
    result = invoke("label-studio", "import", export, "--out", tmp_path / "masks")
    assert result.exit_code == 0, result.stderr
    assert "wrote 1 masks" in result.stdout
    result = invoke(
        "label-studio",
        "export",
        tmp_path / "masks",
        "--images-url-prefix",
        "http://h/i/",
        "--out",
        tmp_path / "tasks.json",
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "tasks.json").read_text())[0]["data"]["image"] == "http://h/i/dog.jpg"
    bad = tmp_path / "bad.json"
    bad.write_text("{\n  oops")
    result = invoke("label-studio", "import", bad, "--out", tmp_path / "m2")
    assert result.exit_code == 1 and "bad.json:2: not valid JSON" in result.stderr
