"""Large photos: scaled once to the widest picture a task shows, kept on disk, and held in memory within bytes."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import crowdpatch.server.photos as photos_module
from crowdpatch.config import ProjectConfig
from crowdpatch.datasets import load_folder_dataset
from crowdpatch.ingest import add_images
from crowdpatch.project import Project
from crowdpatch.propose import propose
from crowdpatch.server.app import create_app
from crowdpatch.server.byte_cache import ByteLRU
from crowdpatch.server.images import MAX_DEVICE_PX
from crowdpatch.server.photos import SCALED_SIDE_PX, PhotoStore

LARGE = (3600, 2700)
"""Over SCALED_SIDE_PX (2400), small enough to make in a test; a 5000 x 4000 photo goes the same way."""


def large_photo(path: Path, size: tuple[int, int] = LARGE, seed: int = 0) -> Path:
    """A JPEG with a bright disc on a gradient (so saliency finds an object), and some texture."""
    width, height = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    background = (40 + 60 * x / width).astype(np.uint8)
    disc = (x - width * 0.55) ** 2 + (y - height * 0.5) ** 2 < (height * 0.25) ** 2
    pixels = np.stack([background, background, background + 20], axis=-1)
    pixels[disc] = (230, 80, 40)
    pixels = np.clip(pixels.astype(np.int16) + rng.integers(-8, 9, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, quality=90)
    return path


@pytest.fixture
def large_project(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    large_photo(folder / "big.jpg")
    config = ProjectConfig(name="big", target="object", images_dir=str(folder))
    config.crowd.gold_rate = 0.0
    project = Project.create(tmp_path / "big", config)
    add_images(project, load_folder_dataset(folder).records)
    assert not propose(project).problems
    yield project
    project.close()


class CountingLoads:
    """``load_rgb`` as the photo store calls it, counting the decodes of originals."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[int | None] = []
        real = photos_module.load_rgb

        def load(path, *args, max_side=None, **kwargs):
            self.calls.append(max_side)
            return real(path, *args, max_side=max_side, **kwargs)

        monkeypatch.setattr(photos_module, "load_rgb", load)


def first_task(client: TestClient, project: Project) -> dict:
    opened = client.post(
        f"/api/v1/projects/{project.config.name}/sessions",
        json={"platform": "simulated", "worker_id": "w"},
        headers={"X-API-Key": project.config.server.effective_api_key()},
    )
    token = {"Authorization": f"Bearer {opened.json()['token']}"}
    task = client.get("/api/v1/tasks/next", headers=token)
    assert task.status_code == 200, task.text
    return task.json()


def picture(client: TestClient, url: str) -> Image.Image:
    response = client.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    return Image.open(io.BytesIO(response.content))


def test_a_large_photo_is_scaled_once_kept_on_disk_and_read_from_there_after_a_restart(large_project, monkeypatch):
    project = large_project
    loads = CountingLoads(monkeypatch)
    with TestClient(create_app(project)) as client:
        task = first_task(client, project)
        assert (task["image_width"], task["image_height"]) == LARGE  # coordinates stay the original's
        shown = picture(client, task["image_url"] + "&px=4096&dpr=4")  # asks for more than any screen shows
        assert shown.width == MAX_DEVICE_PX
        assert shown.height == round(MAX_DEVICE_PX * LARGE[1] / LARGE[0])
        store = client.app.state.crowdpatch.pictures.photos
        held = store.photo(next(iter(client.app.state.crowdpatch.image_info.values()))[0])
        assert max(held.pixels.size) == SCALED_SIDE_PX and (held.width, held.height) == LARGE
        assert loads.calls == [SCALED_SIDE_PX]  # the original decoded once, at a reduced scale
    kept = list((project.directory / "scaled").glob("*.jpg"))
    assert len(kept) == 1 and max(Image.open(kept[0]).size) == SCALED_SIDE_PX

    # A new server process (nothing in memory) draws from the kept copy: the original is not decoded again.
    with TestClient(create_app(project)) as client:
        task = first_task(client, project)
        context = picture(client, task["context_url"] + "&px=300&dpr=2")
        assert context.width == 600
        assert picture(client, task["image_url"]).width == 800
        assert client.app.state.crowdpatch.pictures.photos.scaled == 0
    assert loads.calls == [SCALED_SIDE_PX]


def test_a_kept_copy_older_than_its_photo_is_scaled_again(tmp_path, monkeypatch):
    photo = large_photo(tmp_path / "p.jpg")
    loads = CountingLoads(monkeypatch)
    PhotoStore(tmp_path).photo(str(photo))
    large_photo(photo, seed=1)  # the photo replaced after its copy was made
    kept = PhotoStore(tmp_path).scaled_file(photo)
    os.utime(photo, (kept.stat().st_mtime + 10, kept.stat().st_mtime + 10))
    again = PhotoStore(tmp_path)
    again.photo(str(photo))
    assert loads.calls == [SCALED_SIDE_PX, SCALED_SIDE_PX] and again.scaled == 1


def test_photos_in_memory_never_exceed_their_byte_budget(tmp_path):
    paths = [large_photo(tmp_path / f"{i}.jpg", (3000, 2000), seed=i) for i in range(3)]
    one = SCALED_SIDE_PX * 1600 * 3  # a 3000 x 2000 photo scaled to 2400 x 1600, RGB
    store = PhotoStore(tmp_path, budget=int(1.5 * one))
    for path in paths + paths[:1]:
        photo = store.photo(str(path))
        assert photo.nbytes == one
        assert store.memory.size <= store.memory.budget and len(store.memory) == 1
    assert store.scaled == 3  # the first photo, dropped from memory, came back from its kept copy


def test_the_byte_cache_drops_the_least_recently_used_and_keeps_nothing_larger_than_its_budget():
    cache: ByteLRU[str] = ByteLRU(100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # now b is the least recently used
    cache.put("c", "C", 40)
    assert cache.get("b") is None and cache.get("a") == "A" and cache.get("c") == "C" and cache.size == 80
    cache.put("huge", "H", 101)
    assert cache.get("huge") is None and cache.size == 80
    cache.put("a", "A2", 60)  # replacing an entry counts its new size only
    assert cache.get("a") == "A2" and cache.size <= 100
