"""The registry API: one object over the database and the artifact folder.

Every write is one short transaction run through `retrying`, so a lock held by another
process (the server's worker, a CLI run) delays it instead of failing it. Returned rows
are detached snapshots (expire_on_commit=False): read them freely, change them only
through these methods.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tunesmith.store import liveness, migrate
from tunesmith.store.artifacts import ArtifactStore
from tunesmith.store.datasets import DatasetDiff, canonicalise, diff_lines, read_lines
from tunesmith.store.engine import make_engine, retrying
from tunesmith.store.errors import RegistryError
from tunesmith.store.home import database_url, tunesmith_home
from tunesmith.store.schema import (
    FINISHED,
    JOB_STATUSES,
    Alias,
    Checkpoint,
    DatasetVersion,
    Event,
    File,
    Job,
    Model,
    ModelDataset,
    now,
)

T = TypeVar("T")
ALIAS_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*@[A-Za-z0-9][A-Za-z0-9._-]*$")


def open_registry(url: str | None = None, home: Path | None = None) -> Registry:
    """Open (and migrate) the registry: `url`, else $TUNESMITH_DATABASE_URL, else SQLite at home."""
    home = home or tunesmith_home()
    engine = make_engine(url or database_url(home))
    migrate.upgrade(engine)
    return Registry(engine, ArtifactStore(home / "artifacts"))


def slug(text: str, limit: int = 48) -> str:
    """A name part of letters, digits and . _ -; a long one is cut at a word's end, not inside it."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-").lower()
    if len(text) > limit:
        cut = text[: limit + 1]
        text = cut[: cut.rfind("-")] if cut.rfind("-") > limit // 2 else text[:limit]
    return text.strip("-") or "model"


class Registry:
    def __init__(self, engine: Engine, artifacts: ArtifactStore):
        self.engine = engine
        self.artifacts = artifacts
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        reader = engine.execution_options(sqlite_begin="DEFERRED")
        self._readers = sessionmaker(reader, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    def write(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one transaction, again from the start after a transient lock error."""
        def attempt() -> T:
            with self._sessions.begin() as session:
                return work(session)
        return retrying(attempt)

    def read(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a read-only snapshot (SQLite: no write lock taken), after settling any
        running job whose process is gone (store/liveness.py), so no reader sees it running.

        The check and `work` share one snapshot when nothing is lost (the common case: one
        transaction per read); otherwise the lost jobs are settled and `work` reads afresh."""
        def attempt() -> tuple[list[Any], T | None]:
            with self._readers.begin() as session:
                lost = liveness.find_lost(session)
                return lost, None if lost else work(session)
        lost, result = retrying(attempt)
        if not lost:
            return result  # type: ignore[return-value]
        liveness.settle(self, lost)
        return self.read_raw(work)

    def read_raw(self, work: Callable[[Session], T]) -> T:
        """`read` without the liveness check (the check's own read)."""
        def attempt() -> T:
            with self._readers.begin() as session:
                return work(session)
        return retrying(attempt)

    # --- files ------------------------------------------------------------------------

    def add_file(self, path: str | Path, purpose: str = "fine-tune") -> File:
        path = Path(path)
        sha, location = self.artifacts.put_file(path)
        return self._file_row(sha, path.name, location, purpose)

    def _file_row(self, sha: str, filename: str, location: Path, purpose: str) -> File:
        def work(session: Session) -> File:
            found = session.scalar(select(File).where(File.sha256 == sha))
            if found is None:
                found = File(sha256=sha, filename=filename, bytes=location.stat().st_size,
                             purpose=purpose, location=str(location))
                session.add(found)
            return found
        return self._insert_once(work)

    def file(self, file_id: str) -> File:
        return self._one(File, file_id, File.id)

    # --- dataset versions ---------------------------------------------------------------

    def add_dataset(self, path: str | Path, fmt: str = "auto", token_stats: dict[str, Any] | None = None,
                    findings: dict[str, Any] | None = None) -> DatasetVersion:
        """Record a dataset's content; data already recorded returns its existing version."""
        canonical = canonicalise(path, fmt)
        content = canonical.content
        digest = canonical.content_hash
        sha, location = self.artifacts.put_bytes(content, ".jsonl")
        stored = self._file_row(sha, f"{Path(path).name}.canonical.jsonl", location, "dataset")
        summary = findings or {"errors": canonical.errors, "warnings": canonical.warnings,
                               "codes": canonical.finding_codes}

        def work(session: Session) -> DatasetVersion:
            found = session.scalar(select(DatasetVersion).where(DatasetVersion.content_hash == digest))
            if found is None:
                found = DatasetVersion(id=f"ds-{digest[:16]}", content_hash=digest, format=canonical.format,
                                       source_path=str(Path(path).resolve()), examples=len(canonical.lines),
                                       errors=canonical.errors, warnings=canonical.warnings,
                                       token_stats=token_stats, findings=summary, file_id=stored.id)
                session.add(found)
            elif token_stats and not found.token_stats:
                found.token_stats = token_stats
            return found
        return self._insert_once(work)

    def dataset(self, ref: str) -> DatasetVersion:
        return self._one(DatasetVersion, ref, DatasetVersion.id, DatasetVersion.content_hash)

    def datasets(self) -> list[DatasetVersion]:
        return self.read(lambda s: list(s.scalars(
            select(DatasetVersion).order_by(DatasetVersion.created_at.desc()))))

    def dataset_path(self, version: DatasetVersion) -> Path:
        """The version's canonical JSONL, loadable by tunesmith.data.load."""
        if version.file_id is None:
            raise RegistryError("dataset version has no stored content", where=version.id)
        return Path(self.file(version.file_id).location)

    def dataset_lines(self, version: DatasetVersion) -> list[str]:
        return list(read_lines(self.dataset_path(version)))

    def diff_datasets(self, old: str, new: str) -> DatasetDiff:
        return diff_lines(self.dataset_lines(self.dataset(old)), self.dataset_lines(self.dataset(new)))

    # --- jobs ---------------------------------------------------------------------------

    def create_job(self, recipe: dict[str, Any], *, status: str = "validating_files", **fields: Any) -> Job:
        _check_status(status)
        job = Job(recipe=recipe, status=status, base_model=recipe.get("base_model", ""),
                  method=recipe.get("method", "sft"), **fields)
        return self.write(lambda s: _added(s, job))

    def update_job(self, job_id: str, **fields: Any) -> Job:
        if "status" in fields:
            _check_status(fields["status"])

        def work(session: Session) -> Job:
            job = session.get(Job, job_id)
            if job is None:
                raise RegistryError(f"no job {job_id}")
            status = fields.get("status")
            if status == "running" and job.started_at is None:
                job.started_at = now()
            if status in FINISHED and job.finished_at is None:
                job.finished_at = now()
            for key, value in fields.items():
                setattr(job, key, value)
            return job
        return self.write(work)

    def job(self, ref: str) -> Job:
        """A job by id, id prefix, run directory path or run directory name."""
        resolved = str(Path(ref).expanduser().resolve())
        return self._one(Job, ref, Job.id, extra=or_(Job.run_dir == resolved,
                                                     Job.run_dir.like(f"%/{_like(ref)}", escape="\\")))

    def job_for_run_dir(self, run_dir: str | Path) -> Job | None:
        path = str(Path(run_dir).resolve())
        return self.read(lambda s: s.scalar(
            select(Job).where(Job.run_dir == path).order_by(Job.created_at.desc()).limit(1)))

    def jobs(self, limit: int | None = None, status: str | None = None) -> list[Job]:
        query = select(Job).order_by(Job.created_at.desc())
        if status:
            query = query.where(Job.status == status)
        return self.read(lambda s: list(s.scalars(query.limit(limit))))

    # --- events and checkpoints ---------------------------------------------------------

    def add_event(self, job_id: str, type: str, data: dict[str, Any] | None = None, *,
                  step: int | None = None, level: str = "info", message: str | None = None) -> Event:
        event = Event(job_id=job_id, type=type, data=jsonable(data or {}), step=step, level=level,
                      message=message)
        return self.write(lambda s: _added(s, event))

    def add_events(self, job_id: str, records: list[dict[str, Any]]) -> int:
        """Many loop records at once (registering a run folder), in one transaction."""
        rows = [Event(job_id=job_id, type=str(r.get("type", "event")), data=jsonable(r), step=r.get("step"),
                      level=str(r.get("level", "info")), message=r.get("message")) for r in records]
        return self.write(lambda s: (s.add_all(rows), len(rows))[1])

    def events(self, job_id: str, types: Iterable[str] | None = None) -> list[Event]:
        query = select(Event).where(Event.job_id == job_id).order_by(Event.id)
        if types is not None:
            query = query.where(Event.type.in_(list(types)))
        return self.read(lambda s: list(s.scalars(query)))

    def add_checkpoint(self, job_id: str, step: int, path: str, metrics: dict[str, Any]) -> Checkpoint:
        def work(session: Session) -> Checkpoint:
            found = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id,
                                                            Checkpoint.step == step))
            if found is None:
                found = Checkpoint(job_id=job_id, step=step, path=path, metrics=jsonable(metrics))
                session.add(found)
            else:  # a resumed run saves the same step again
                found.path, found.metrics = path, jsonable(metrics)
            return found
        return self.write(work)

    def forget_after(self, job_id: str, step: int) -> None:
        """A resumed run starts again at `step`: the train/eval events and checkpoint rows that a
        killed attempt recorded after it (at step 0: all of them) are dropped, so the job's curve
        has each step once, as metrics.jsonl does."""
        def work(session: Session) -> None:
            beyond = Event.step >= 0 if step == 0 else Event.step > step
            session.execute(delete(Event).where(Event.job_id == job_id, Event.type.in_(("train", "eval")),
                                                beyond))
            session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step > step))
        self.write(work)

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        return self.read(lambda s: list(s.scalars(
            select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step))))

    # --- models and aliases -------------------------------------------------------------

    def add_model(self, *, base_model: str, kind: str, path: str, recipe: dict[str, Any],
                  evaluation: dict[str, Any] | None = None, job_id: str | None = None,
                  base_revision: str | None = None, parent_id: str | None = None,
                  suffix: str | None = None, datasets: dict[str, str] | None = None) -> Model:
        model_id = uuid.uuid4().hex[:12]
        name = f"ft:{slug(Path(base_model).name)}:{slug(suffix or 'tunesmith', 40)}:{model_id}"

        def work(session: Session) -> Model:
            model = Model(id=model_id, name=name, base_model=base_model, base_revision=base_revision,
                          kind=kind, path=path, recipe=recipe, evaluation=evaluation or {}, job_id=job_id,
                          parent_id=parent_id)
            model.datasets = [ModelDataset(dataset_id=d, role=r) for r, d in (datasets or {}).items()]
            return _added(session, model)
        return self.write(work)

    def update_model(self, model_id: str, **fields: Any) -> Model:
        def work(session: Session) -> Model:
            model = session.get(Model, model_id)
            if model is None:
                raise RegistryError(f"no model {model_id}")
            for key, value in fields.items():
                setattr(model, key, value)
            return model
        return self.write(work)

    def model(self, ref: str, include_deleted: bool = False) -> Model:
        """A model by alias (name@label), id, full name or unique prefix of either."""
        if "@" in ref:
            alias = self.read(lambda s: s.get(Alias, ref))
            if alias is None:
                raise RegistryError(f"no alias {ref}", fix="see `tunesmith models list`")
            ref = alias.model_id
        model = self._one(Model, ref, Model.id, Model.name)
        if model.deleted_at is not None and not include_deleted:
            raise RegistryError(f"model {model.name} was deleted", where=ref)
        return model

    def models(self, include_deleted: bool = False) -> list[Model]:
        query = select(Model).order_by(Model.created_at.desc())
        if not include_deleted:
            query = query.where(Model.deleted_at.is_(None))
        return self.read(lambda s: list(s.scalars(query)))

    def delete_model(self, ref: str) -> Model:
        """Mark a model deleted and drop its aliases; the row stays so children keep their lineage."""
        target = self.model(ref)

        def work(session: Session) -> Model:
            model = session.get(Model, target.id)
            assert model is not None
            session.execute(delete(Alias).where(Alias.model_id == model.id))
            model.deleted_at = now()
            return model
        return self.write(work)

    def set_alias(self, alias: str, model_ref: str) -> Alias:
        if not ALIAS_RE.match(alias):
            raise RegistryError(f"bad alias {alias!r}",
                                fix="write it as name@label, e.g. support-bot@production")
        target = self.model(model_ref)

        def work(session: Session) -> Alias:
            row = session.get(Alias, alias)
            if row is None:
                row = Alias(name=alias, model_id=target.id)
                session.add(row)
            else:
                row.model_id, row.updated_at = target.id, now()
            return row
        return self._insert_once(work)

    def aliases(self, model_id: str | None = None) -> list[Alias]:
        query = select(Alias).order_by(Alias.name)
        if model_id is not None:
            query = query.where(Alias.model_id == model_id)
        return self.read(lambda s: list(s.scalars(query)))

    def alias_target(self, alias: str) -> Model | None:
        row = self.read(lambda s: s.get(Alias, alias))
        return None if row is None else self.model(row.model_id, include_deleted=True)

    def lineage(self, ref: str) -> list[Model]:
        """The model, then its parent, grandparent... (deleted ancestors included)."""
        chain = [self.model(ref, include_deleted=True)]
        seen = {chain[0].id}
        while chain[-1].parent_id and chain[-1].parent_id not in seen:
            chain.append(self.model(chain[-1].parent_id, include_deleted=True))
            seen.add(chain[-1].id)
        return chain

    # --- helpers ------------------------------------------------------------------------

    def _insert_once(self, work: Callable[[Session], T]) -> T:
        """Insert-or-get when another process may insert the same unique row at the same time."""
        try:
            return self.write(work)
        except IntegrityError:
            return self.write(work)

    def _one(self, table: type[T], ref: str, *columns: Any, extra: Any = None) -> T:
        def work(session: Session) -> list[T]:
            exact = [session.scalar(select(table).where(column == ref)) for column in columns]
            found = [row for row in exact if row is not None]
            if found:
                return found[:1]
            prefix = or_(*(column.like(f"{_like(ref)}%", escape="\\") for column in columns))
            condition = prefix if extra is None else or_(prefix, extra)
            return list(session.scalars(select(table).where(condition).limit(5)))
        rows = self.read(work)
        what = getattr(table, "__tablename__", "row").rstrip("s").replace("_", " ")
        if not rows:
            raise RegistryError(f"no {what} matches {ref!r}")
        if len(rows) > 1:
            raise RegistryError(f"{ref!r} matches several: {', '.join(_label(r) for r in rows)}",
                                fix="give more of the id")
        return rows[0]


def jsonable(value: Any) -> Any:
    """Plain JSON for any database: NaN/inf become null (PostgreSQL's json rejects them),
    paths and other objects become strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | bool):
        return value
    return str(value)


def _added(session: Session, row: T) -> T:
    session.add(row)
    session.flush()
    return row


def _check_status(status: str) -> None:
    if status not in JOB_STATUSES:
        raise RegistryError(f"unknown job status {status!r}; allowed: {', '.join(JOB_STATUSES)}")


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _label(row: Any) -> str:
    return str(getattr(row, "name", None) or getattr(row, "id", row))
