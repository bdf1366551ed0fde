"""Adding a dataset's images to a project (what `crowdpatch init` does after writing the config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import select

from crowdpatch.datasets import ImageLoadError, ImageRecord, InputProblem, image_size
from crowdpatch.project import Project
from crowdpatch.store.models import ImageRow


@dataclass
class IngestReport:
    added: int = 0
    already_present: int = 0
    problems: list[InputProblem] = field(default_factory=list)


def add_images(project: Project, records: list[ImageRecord], progress: Callable[[int], None] | None = None) -> IngestReport:
    """Register images (header read only); unreadable ones are reported, the rest are added."""
    report = IngestReport()
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
            if progress:
                progress(1)
    return report
