"""Adding a dataset's images to a project (what `crowdpatch init` does after writing the config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import select

from crowdpatch.datasets import ImageLoadError, ImageRecord, InputProblem, MaskSurvey, image_size, read_mask
from crowdpatch.project import Project
from crowdpatch.store.models import ImageRow


@dataclass
class IngestReport:
    added: int = 0
    already_present: int = 0
    problems: list[InputProblem] = field(default_factory=list)
    masks: MaskSurvey = field(default_factory=MaskSurvey)
    """How the added images' ground-truth masks were read (encoding, objects, suspicious files)."""
    without_mask: list[str] = field(default_factory=list)
    """Added images for which a masks folder was given but held no mask with their name."""


def _survey_mask(report: IngestReport, record: ImageRecord, size: tuple[int, int]) -> None:
    try:
        report.masks.add(record.mask_path, read_mask(record.mask_path, size), size)
    except ImageLoadError as exc:
        report.masks.unreadable.append((str(record.mask_path), exc.reason))


def add_images(
    project: Project, records: list[ImageRecord], progress: Callable[[int], None] | None = None
) -> IngestReport:
    """Register images (header read only); unreadable ones are reported, the rest are added.

    Every added image's ground-truth mask is read once, so the report can say how the set was
    encoded and warn, before any work is done, when the masks do not mark the object the way
    they were read (see :class:`MaskSurvey`).
    """
    report = IngestReport()
    masks_given = project.config.masks_dir is not None
    with project.sessions.begin() as session:
        known = set(session.scalars(select(ImageRow.path).where(ImageRow.project_id == project.id)))
        for record in records:
            path = str(record.path)
            if path in known:
                report.already_present += 1
            else:
                try:
                    width, height = image_size(record.path)
                except ImageLoadError as exc:
                    report.problems.append(InputProblem(path, exc.reason))
                else:
                    session.add(
                        ImageRow(
                            project_id=project.id,
                            path=path,
                            width=width,
                            height=height,
                            label=record.label,
                            split=record.split,
                            groups=dict(record.groups),
                            mask_path=str(record.mask_path) if record.mask_path else None,
                        )
                    )
                    known.add(path)
                    report.added += 1
                    if record.mask_path is not None:
                        _survey_mask(report, record, (width, height))
                    elif masks_given:
                        report.without_mask.append(record.path.name)
            if progress:
                progress(1)
    return report
