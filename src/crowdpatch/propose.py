"""Step 1: saliency clusters per image, and the verification questions that go with them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from sqlalchemy import select

from crowdpatch.boxes import Box
from crowdpatch.crowd.gold import gold_windows
from crowdpatch.crowd.policies import policy_for
from crowdpatch.crowd.questions import add_gold_task, add_verify_task
from crowdpatch.datasets import ImageLoadError, InputProblem, load_mask, load_rgb
from crowdpatch.project import Project
from crowdpatch.saliency import backend_from_config, clusters_from_config
from crowdpatch.saliency.bing import BingProposer
from crowdpatch.saliency.finetuned import newest_finetuned
from crowdpatch.store.models import ImageRow, RegionRow

BATCH_SIZE = 16


@dataclass
class ProposeReport:
    processed: int = 0
    clusters: int = 0
    whole_image: int = 0
    """Images asked about whole: no saliency cluster, or a policy that localizes the target itself (precise)."""
    gold: int = 0
    first_questions: Counter = field(default_factory=Counter)
    """Questions asked of whole images, by kind (extreme points, outline checks, grids)."""
    problems: list[InputProblem] = field(default_factory=list)


def make_proposer(project: Project) -> Callable[[np.ndarray], list] | None:
    """BING boxes when the project asks for them; None means saliency clusters."""
    cfg = project.config.saliency
    if cfg.proposer != "bing":
        return None
    if not cfg.proposer_model:
        raise ValueError("proposer 'bing' needs [saliency] proposer_model = the folder of ObjNessB2W8*.yml.gz")
    return BingProposer(cfg.proposer_model, top_k=cfg.top_k, min_area=cfg.min_area).propose


def saliency_file(project: Project, image_id: int) -> Path:
    return project.path("saliency", f"{image_id:06d}.png")


def propose(project: Project, progress: Callable[[int], None] | None = None, limit: int | None = None) -> ProposeReport:
    """Run step 1 on every image not proposed yet (so a killed run resumes where it stopped), or on the next
    ``limit`` of them, in the study's order. A ``csnet`` backend uses the study's newest fine-tuned weights."""
    settings = project.config.saliency
    newest = newest_finetuned(project.path("saliency")) if settings.backend == "csnet" else None
    if newest is not None:
        settings = settings.model_copy(update={"weights": str(newest)})
    backend = backend_from_config(settings)
    proposer = make_proposer(project)
    report = ProposeReport()
    with project.sessions() as session:
        pending = session.execute(
            select(ImageRow.id, ImageRow.path, ImageRow.mask_path, ImageRow.width, ImageRow.height)
            .where(ImageRow.project_id == project.id, ImageRow.stage == "new")
            .order_by(ImageRow.id)
            .limit(limit)
        ).all()
    project.path("saliency").mkdir(exist_ok=True)
    rng = np.random.default_rng(project.config.simulation.seed)
    for start in range(0, len(pending), BATCH_SIZE):
        batch = pending[start : start + BATCH_SIZE]
        loaded = []
        for row in batch:
            try:
                image = load_rgb(Path(row.path))
                gt = load_mask(Path(row.mask_path), (image.shape[1], image.shape[0])) if row.mask_path else None
            except ImageLoadError as exc:
                report.problems.append(InputProblem(row.path, exc.reason))
                _mark_error(project, row.id, exc.reason)
                if progress:
                    progress(1)
                continue
            loaded.append((row, image, gt))
        if not loaded:
            continue
        maps = backend.predict([image for _, image, _ in loaded], [gt for _, _, gt in loaded])
        for (row, image, gt), saliency in zip(loaded, maps):
            _store_proposal(project, row, image, gt, saliency, rng, report, proposer)
            report.processed += 1
            if progress:
                progress(1)
    return report


def _mark_error(project: Project, image_id: int, reason: str) -> None:
    with project.sessions.begin() as session:
        image = session.get(ImageRow, image_id)
        image.stage, image.error = "error", reason


def _store_proposal(project, row, image, gt, saliency, rng, report: ProposeReport, proposer=None) -> None:
    config = project.config
    policy = policy_for(config)
    height, width = image.shape[:2]
    path = saliency_file(project, row.id)
    tmp = path.with_suffix(".tmp.png")
    try:
        Image.fromarray(np.round(np.clip(saliency, 0, 1) * 255).astype(np.uint8)).save(tmp)
        tmp.replace(path)
    except BaseException:
        # A full disk leaves a partial file behind; the image stays 'new', so a rerun writes it whole.
        tmp.unlink(missing_ok=True)
        raise
    clusters = proposer(image) if proposer is not None else clusters_from_config(saliency, config.saliency)
    with project.sessions.begin() as session:
        image_row = session.get(ImageRow, row.id)
        image_row.saliency_path = str(path)
        image_row.width, image_row.height = width, height
        if clusters and policy.verifies_clusters:
            for cluster in clusters:
                region = RegionRow(
                    image_id=row.id,
                    source="saliency",
                    box=cluster.box.as_list(),
                    outline=cluster.outline,
                    mass=cluster.mass,
                )
                session.add(region)
                session.flush()
                add_verify_task(session, project.id, image_row, region, config, policy.first_votes(config))
            image_row.stage = "verify"
            report.clusters += len(clusters)
        else:
            region = RegionRow(
                image_id=row.id, source="whole", box=Box.whole(width, height).as_list(), verdict="accepted"
            )
            session.add(region)
            session.flush()
            asked = policy.region_questions(session, project.id, row.id, region, config)
            report.first_questions.update(asked)
            image_row.stage = "patch"
            report.whole_image += 1
        if gt is not None and config.crowd.gold_rate > 0:
            for i, (box, answer) in enumerate(gold_windows(gt, rng)):
                add_gold_task(session, project.id, row.id, i, box, answer)
                report.gold += 1
