"""Learning from the crowd as a study goes: CSNet fine-tuned on the finished masks, maps recomputed.

With ``[saliency] finetune_every = N`` (backend ``csnet``), every N finished images the network
is fine-tuned, from the project's checkpoint, on all masks finished so far (the crowd's masks as
``crowdpatch masks`` builds them), saved as ``saliency/finetuned-<count>.pt``, and used from then
on: for step 1 of images not proposed yet, and to recompute the map of every image none of whose
questions has been answered or handed to a worker yet. An outline check reads its image's map
when it is shown and answered, so recomputing the map recomputes the question. A recomputed map is
a new file (``<id>-ft<count>.png``): a saliency file never changes once written, and readers may
cache it by path.

The step trains for minutes (about 1.3 s per mask on one CPU thread) and reads and writes files:
it runs outside any database transaction, between rounds of the simulation (``run_pipeline``) or
when the requester runs ``crowdpatch finetune-saliency`` on a served study.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sqlalchemy import exists, select

from crowdpatch.crowd.kinds import GOLD
from crowdpatch.datasets import ImageLoadError, load_rgb
from crowdpatch.masks.build import MaskBuilder
from crowdpatch.patches.rasterize import binarize
from crowdpatch.project import Project
from crowdpatch.saliency.csnet import CSNetBackend
from crowdpatch.saliency.finetuned import finetuned_file
from crowdpatch.store.models import AnswerRow, ImageRow, LeaseRow, TaskRow


@dataclass
class LearnReport:
    trained_on: int
    """Finished masks the network was fine-tuned on (0: nothing was done)."""
    weights: Path | None
    recomputed: list[int]
    """Images whose saliency map (and so outline check) was recomputed."""
    losses: list[float]


def finished_images(project: Project) -> list[int]:
    """Images whose pipeline questions are all decided, in the study's order."""
    with project.sessions() as session:
        return list(
            session.scalars(
                select(ImageRow.id)
                .where(ImageRow.project_id == project.id, ImageRow.stage == "done")
                .order_by(ImageRow.id)
            )
        )


def images_not_started(project: Project) -> list[int]:
    """Proposed images none of whose questions (gold aside) has been answered or handed to a worker yet."""
    answered = (
        select(AnswerRow.id)
        .join(TaskRow, TaskRow.id == AnswerRow.task_id)
        .where(TaskRow.image_id == ImageRow.id, TaskRow.kind != GOLD)
    )
    shown = (
        select(LeaseRow.id)
        .join(TaskRow, TaskRow.id == LeaseRow.task_id)
        .where(TaskRow.image_id == ImageRow.id, TaskRow.kind != GOLD)
    )
    with project.sessions() as session:
        return list(
            session.scalars(
                select(ImageRow.id)
                .where(
                    ImageRow.project_id == project.id,
                    ImageRow.stage.in_(("verify", "patch")),
                    ImageRow.saliency_path.is_not(None),
                    ~exists(answered),
                    ~exists(shown),
                )
                .order_by(ImageRow.id)
            )
        )


def crowd_masks(project: Project, image_ids: Collection[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(photo, the crowd's binary mask) of each image, as ``crowdpatch masks`` would write it."""
    builder = MaskBuilder(project)
    threshold = project.config.patches.mask_threshold
    pairs = []
    with project.sessions() as session:
        paths = dict(session.execute(select(ImageRow.id, ImageRow.path).where(ImageRow.id.in_(image_ids))).all())
    for image_id in image_ids:
        mask = builder.image_mask(image_id)
        binary = binarize(builder.refined(mask, paths[image_id]), threshold)
        pairs.append((load_rgb(Path(paths[image_id])), binary))
    return pairs


def finetune_study(project: Project, skip: Collection[int] = ()) -> LearnReport:
    """Fine-tune on every finished mask, save the weights, recompute the maps of images not started
    (except ``skip``: images a worker is looking at now). Needs the ``csnet`` backend."""
    # PyTorch is an optional dependency: imported only when a study fine-tunes.
    from crowdpatch.saliency.csnet_model import load_csnet
    from crowdpatch.saliency.finetune import FinetuneOptions, finetune, save_finetuned

    saliency = project.config.saliency
    if saliency.backend != "csnet" or not saliency.weights:
        raise ValueError("fine-tuning needs [saliency] backend = 'csnet' with its weights")
    finished = finished_images(project)
    if not finished:
        return LearnReport(0, None, [], [])
    pairs = crowd_masks(project, finished)
    model = load_csnet(saliency.weights)  # from the checkpoint each time: no drift from one run to the next
    options = FinetuneOptions(
        epochs=saliency.finetune_epochs,
        learning_rate=saliency.finetune_learning_rate,
        seed=project.config.simulation.seed,
    )
    result = finetune(model, [photo for photo, _ in pairs], [mask for _, mask in pairs], options=options)
    weights = save_finetuned(result.model, finetuned_file(project.path("saliency"), len(finished)))
    recomputed = recompute_maps(project, str(weights), len(finished), skip)
    return LearnReport(len(finished), weights, recomputed, result.losses)


def recompute_maps(project: Project, weights: str, count: int, skip: Collection[int] = ()) -> list[int]:
    """New saliency maps from ``weights`` for the images not started yet; each image's row points at its new map."""
    skipped = set(skip)
    pending = [image_id for image_id in images_not_started(project) if image_id not in skipped]
    if not pending:
        return []
    backend = CSNetBackend(weights, device="cpu")
    with project.sessions() as session:
        paths = dict(session.execute(select(ImageRow.id, ImageRow.path).where(ImageRow.id.in_(pending))).all())
    done = []
    for image_id in pending:
        try:
            photo = load_rgb(Path(paths[image_id]))
        except ImageLoadError:
            continue  # a photo gone since step 1 keeps the map it has
        (saliency,) = backend.predict([photo])
        path = project.path("saliency", f"{image_id:06d}-ft{count}.png")
        tmp = path.with_suffix(".tmp.png")
        Image.fromarray(np.round(np.clip(saliency, 0, 1) * 255).astype(np.uint8)).save(tmp)
        tmp.replace(path)
        with project.sessions.begin() as session:
            session.get(ImageRow, image_id).saliency_path = str(path)
        done.append(image_id)
    return done
