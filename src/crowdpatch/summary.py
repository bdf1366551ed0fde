"""The figures a run reports: cost per image against polygons, mask quality, and where times come from."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from crowdpatch.crowd.kinds import EXTREME
from crowdpatch.crowd.policies.precise import ABSENT
from crowdpatch.masks.build import MaskStats
from crowdpatch.project import Project
from crowdpatch.store.models import AnswerRow, ImageRow, MaskRow, TaskRow, WorkerRow


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def times_are(sources: set[str]) -> str:
    """'modeled' or 'measured' when all answers agree; 'mixed' says a report combines both."""
    if not sources:
        return "modeled"
    return sources.pop() if len(sources) == 1 else "mixed"


def summarize(project: Project, stats: list[MaskStats], latency_seconds: float | None = None) -> dict[str, Any]:
    """The ``summary.json`` of a run (see README for every key)."""
    config = project.config
    with project.sessions() as session:
        images = (
            session.scalar(
                select(func.count())
                .select_from(ImageRow)
                .where(ImageRow.project_id == project.id, ImageRow.stage != "error")
            )
            or 0
        )
        per_kind = session.execute(
            select(TaskRow.kind, func.count(AnswerRow.id), func.sum(AnswerRow.seconds))
            .join(TaskRow, TaskRow.id == AnswerRow.task_id)
            .where(TaskRow.project_id == project.id)
            .group_by(TaskRow.kind)
        ).all()
        sources = set(
            session.scalars(
                select(AnswerRow.time_source).join(TaskRow).where(TaskRow.project_id == project.id).distinct()
            )
        )
        questions = (
            session.scalar(
                select(func.count())
                .select_from(TaskRow)
                .where(TaskRow.project_id == project.id, TaskRow.kind != "gold")
            )
            or 0
        )
        open_questions = (
            session.scalar(
                select(func.count())
                .select_from(TaskRow)
                .where(TaskRow.project_id == project.id, TaskRow.kind != "gold", TaskRow.state == "open")
            )
            or 0
        )
        not_proposed = (
            session.scalar(
                select(func.count())
                .select_from(ImageRow)
                .where(ImageRow.project_id == project.id, ImageRow.stage == "new")
            )
            or 0
        )
        banned = (
            session.scalar(
                select(func.count()).select_from(WorkerRow).where(WorkerRow.project_id == project.id, WorkerRow.banned)
            )
            or 0
        )
        simulated = session.execute(
            select(WorkerRow.attributes, WorkerRow.banned).where(
                WorkerRow.project_id == project.id, WorkerRow.platform == "simulated"
            )
        ).all()
        workers = (
            session.scalar(
                select(func.count(func.distinct(AnswerRow.worker_id)))
                .join(TaskRow)
                .where(TaskRow.project_id == project.id)
            )
            or 0
        )
        # The precise policy's "not here" verdicts: images the crowd says show no target (they get no mask).
        crowd_absent = (
            session.scalar(
                select(func.count(func.distinct(TaskRow.image_id))).where(
                    TaskRow.project_id == project.id, TaskRow.kind == EXTREME, TaskRow.decision == ABSENT
                )
            )
            or 0
        )
        # Masks of the polygon baseline study (masks/polygons.py), recorded when the masks were built.
        polygon_masks = session.scalars(
            select(MaskRow.iou)
            .join(ImageRow, ImageRow.id == MaskRow.image_id)
            .where(ImageRow.project_id == project.id, MaskRow.source == "polygon")
        ).all()
    answers = sum(count for _, count, _ in per_kind)
    # Polygons drawn in the baseline study are the reference, not part of the patch method's cost.
    seconds = sum(total or 0.0 for kind, _, total in per_kind if kind != "polygon")
    per_image = seconds / images if images else 0.0
    drawn = [(count, total or 0.0) for kind, count, total in per_kind if kind == "polygon" and count]
    polygon = drawn[0][1] / drawn[0][0] if drawn else config.time_model.polygon
    ious = [s.iou for s in stats if s.iou is not None]
    saliency_ious = [s.saliency_iou for s in stats if s.saliency_iou is not None]
    summary: dict[str, Any] = {
        # Masks of a study still running are built from the answers so far: say so beside every figure.
        "complete": answers > 0 and open_questions == 0 and not_proposed == 0,
        "open_questions": open_questions,
        "images_not_proposed": not_proposed,
        "images": images,
        "answers": answers,
        "answers_per_image": answers / images if images else 0.0,
        "questions_per_image": questions / images if images else 0.0,
        "modeled_seconds_per_image": {"patch": per_image, "polygon": polygon},
        "speedup_vs_polygon": polygon / per_image if per_image else None,
        "mask_iou": {
            "patch": _mean(ious),
            "saliency": _mean(saliency_ious),
            "polygon": _mean([iou for iou in polygon_masks if iou is not None]),
        },
        "images_scored": len(ious),
        "images_without_object_in_truth": sum(1 for s in stats if s.truth_empty),
        "images_without_target_by_crowd": crowd_absent,
        "polygon_masks": len(polygon_masks),
        "seconds_per_image_by_kind": {kind: (total or 0.0) / images for kind, _, total in per_kind} if images else {},
        "answers_by_kind": {kind: count for kind, count, _ in per_kind},
        "workers": workers,
        "workers_banned": banned,
        "times_are": times_are(sources),
        "polygon_seconds_are": "measured" if drawn else "modeled",
        **({"simulated_bans": _simulated_bans(simulated)} if simulated else {}),
        "settings": {
            "planner": config.crowd.planner,
            "budget_seconds": config.adaptive.budget_seconds,
            "presentation": config.patches.presentation,
            "max_depth": config.patches.max_depth,
            "grid_size": config.patches.grid_size,
            "votes": config.crowd.votes,
            "aggregation": config.aggregation.method,
            "saliency": config.saliency.backend,
            "worker_error": config.simulation.worker_error,
            "spammers": config.simulation.spammers,
        },
    }
    if summary["times_are"] != "modeled":
        summary["measured_seconds_per_image"] = summary.pop("modeled_seconds_per_image")
    if latency_seconds is not None:
        summary["latency_seconds"] = latency_seconds
    return summary


def _simulated_bans(workers: list) -> dict[str, int]:
    """Who quality control stopped (gold, too fast, constant answers), by the simulated worker's true kind.

    Only a simulation knows that kind.
    """
    counts = {"spammers": 0, "spammers_banned": 0, "honest": 0, "honest_banned": 0}
    for attributes, banned in workers:
        kind = "honest" if attributes.get("kind") == "honest" else "spammers"
        counts[kind] += 1
        counts[f"{kind}_banned"] += int(banned)
    return counts


def incomplete_note(summary: dict[str, Any]) -> str | None:
    """Why a summary's masks are not final yet ("incomplete: 120 questions still open; ..."), or None when complete."""
    if summary.get("complete", True) or not summary.get("answers"):
        return None
    parts = []
    if summary.get("images_not_proposed"):
        parts.append(f"{summary['images_not_proposed']} images not proposed yet (run `crowdpatch propose`)")
    if summary.get("open_questions"):
        parts.append(f"{summary['open_questions']} questions still open")
    return f"incomplete: {'; '.join(parts)}; these masks use the {summary['answers']} answers so far"


def headline(summary: dict[str, Any]) -> str:
    """One sentence saying what a run achieved, from its ``summary.json``: the report's first line and the CLI's last.

    Crowd-mask quality and human time per image against polygons, the adaptive planner and
    saliency alone when the run has them, worst-group accuracy per guide after training, and
    what is missing (ground truth, answers, open questions), so the sentence is never read
    as more than the run shows.
    """
    times_are = summary.get("times_are", "modeled")
    seconds = summary.get("measured_seconds_per_image") or summary.get("modeled_seconds_per_image") or {}
    iou = summary.get("mask_iou") or {}
    adaptive = summary.get("adaptive")
    planner = (summary.get("settings") or {}).get("planner")
    who = "Crowd masks"
    if adaptive:
        who += " (fixed planner)" if planner in (None, "fixed") else f" ({planner} planner)"
    elif planner == "adaptive":
        who += " (adaptive planner)"
    if not summary.get("images"):
        clauses = ["No images in this run"]
    elif not summary.get("answers"):
        clauses = [f"No answers yet for {summary['images']} images (run `crowdpatch simulate`, or serve workers)"]
    else:
        quality = f"IoU {iou['patch']:.2f} at " if iou.get("patch") is not None else ""
        clauses = [
            (
                f"{who}: {quality}{_seconds(seconds.get('patch'))} of {_human_time(times_are)} per image, "
                f"{_versus_polygons(summary.get('speedup_vs_polygon'))}"
            )
        ]
        if iou.get("patch") is None:
            clauses[0] += " (no ground truth, so no IoU)"
    if adaptive and adaptive.get("modeled_seconds_per_image"):
        quality = f"IoU {adaptive['mask_iou']:.2f} at " if adaptive.get("mask_iou") is not None else ""
        speedup = adaptive.get("speedup_vs_polygon")
        clauses.append(
            f"adaptive planner: {quality}{_seconds(adaptive['modeled_seconds_per_image'])}, {_versus_polygons(speedup)}"
        )
    if iou.get("saliency") is not None:
        clauses.append(f"saliency alone: {iou['saliency']:.2f}")
    accuracy = summary.get("accuracy") or {}
    if accuracy:
        named = {"none": "plain training", "patch": "crowd masks", "saliency": "saliency", "gt": "ground-truth masks"}
        parts = [
            f"{accuracy[g]['worst_group']:.2f} with {named.get(g, g)}"
            for g in accuracy
            if accuracy[g].get("worst_group") is not None
        ]
        if parts:
            clauses.append("worst-group accuracy " + ", ".join(parts))
    note = incomplete_note(summary)
    if note:
        clauses.append(note)
    return "; ".join(clauses) + "."


def _human_time(times_are: str) -> str:
    if times_are in ("modeled", "measured"):
        return f"{times_are} human time"
    return "human time (modeled and measured)"


def _seconds(value: float | None) -> str:
    if value is None:
        return "n/a s"
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def _versus_polygons(speedup: float | None) -> str:
    """'1.2x faster than polygons', or an honest 'slower than polygons (0.58x their speed)'."""
    if not speedup:
        return "no cost to compare with polygons"
    if speedup >= 1:
        return f"{speedup:.1f}x faster than polygons" if speedup < 10 else f"{speedup:.0f}x faster than polygons"
    return f"slower than polygons ({speedup:.2f}x their speed)"
