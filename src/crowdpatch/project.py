"""A project directory: ``crowdpatch.toml``, the database, masks/, saliency/ and report/."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session, sessionmaker

from crowdpatch.config import CONFIG_FILENAME, ProjectConfig, load_config, save_config
from crowdpatch.store import open_database
from crowdpatch.store.models import AnswerRow, ImageRow, ProjectRow, TaskRow


class ProjectError(ValueError):
    """The project directory cannot be used as asked."""


@dataclass
class Project:
    directory: Path
    config: ProjectConfig
    engine: Engine
    sessions: sessionmaker[Session]
    id: int
    uid: str
    """Random per project (``ProjectRow.uid``): worker tokens, invites and image links are bound to it."""

    @classmethod
    def create(cls, directory: Path, config: ProjectConfig) -> "Project":
        directory = Path(directory)
        if (directory / CONFIG_FILENAME).exists():
            raise ProjectError(f"{directory} is already a crowdpatch project; use it, or choose a new directory")
        directory.mkdir(parents=True, exist_ok=True)
        engine, sessions = open_database(config.resolved_db_url(directory))
        with sessions.begin() as session:
            row = session.scalar(select(ProjectRow).where(ProjectRow.name == config.name))
            if row is None:
                session.add(ProjectRow(name=config.name, target=config.target))
        save_config(directory, config)
        return cls.open(directory, engine=engine, sessions=sessions)

    @classmethod
    def open(
        cls, directory: Path, engine: Engine | None = None, sessions: sessionmaker[Session] | None = None
    ) -> "Project":
        # Absolute, so the paths stored for saliency maps and masks hold from any working directory.
        directory = Path(directory).absolute()
        config = load_config(directory)
        if engine is None or sessions is None:
            engine, sessions = open_database(config.resolved_db_url(directory))
        with sessions() as session:
            row = session.execute(select(ProjectRow.id, ProjectRow.uid).where(ProjectRow.name == config.name)).first()
        if row is None:
            raise ProjectError(f"database {engine.url} holds no project named {config.name!r}")
        return cls(directory, config, engine, sessions, row.id, row.uid)

    def save_config(self) -> None:
        save_config(self.directory, self.config)

    def path(self, *parts: str) -> Path:
        return self.directory.joinpath(*parts)

    def counts(self) -> dict[str, int]:
        """Images per stage, open and done questions, answers: what `crowdpatch status` shows."""
        with self.sessions() as session:
            stages = dict(
                session.execute(
                    select(ImageRow.stage, func.count()).where(ImageRow.project_id == self.id).group_by(ImageRow.stage)
                ).all()
            )
            tasks = dict(
                session.execute(
                    select(TaskRow.state, func.count())
                    .where(TaskRow.project_id == self.id, TaskRow.kind != "gold")
                    .group_by(TaskRow.state)
                ).all()
            )
            answers = session.scalar(
                select(func.count()).select_from(AnswerRow).join(TaskRow).where(TaskRow.project_id == self.id)
            )
        return {
            **{f"images_{stage}": count for stage, count in stages.items()},
            "questions_open": tasks.get("open", 0),
            "questions_done": tasks.get("done", 0),
            "answers": answers or 0,
        }

    def close(self) -> None:
        self.engine.dispose()
