"""The web dashboard: a static shell at `/` (HTML, CSS and ES modules from the package, no data
in it) and a few JSON routes under /dashboard/api/ for what the OpenAI shapes lack: a job's
loss series and resolved recipe, a model's lineage, aliases and evaluation report, and the data
check of an uploaded file. Every /dashboard/api/ route needs the API key like /v1 does.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, HTMLResponse
from sqlalchemy import func, select

from tunesmith.recipe import BUNDLED_MODEL
from tunesmith.serve.errors import APIError, not_found
from tunesmith.serve.files import live_file
from tunesmith.serve.redact import job_names, public_text, public_value
from tunesmith.serve.state import ServerState, server
from tunesmith.store.errors import RegistryError
from tunesmith.store.schema import Event, File, Job, Model
from tunesmith.store.views import dataset_view, flatten, model_view

STATIC = Path(__file__).parent / "static"
STATIC_PREFIX = "/dashboard/static/"
OPEN_PATHS = ("/",)
"""The shell and its static files hold no data, so they load before the browser has a key."""
REPORT_NAMES = ("report.json", "report.html")
HISTOGRAM_EXAMPLES = 5_000
"""Token lengths for the histogram are measured on at most this many examples."""
HISTOGRAM_BINS = 20
CHECK_CACHE = 32

router = APIRouter()


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(STATIC_PREFIX)


@router.get("/", include_in_schema=False)
def shell() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@router.get("/dashboard/static/{name}", include_in_schema=False)
def static(name: str) -> FileResponse:
    """Files of the static folder by bare name only: nothing outside it can be asked for."""
    path = STATIC / name
    if "/" in name or "\\" in name or name.startswith(".") or not path.is_file():
        raise not_found("static file", name)
    media = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}.get(path.suffix)
    return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})


# --- jobs -------------------------------------------------------------------------------


def _job(state: ServerState, job_id: str) -> Job:
    job = state.registry.read(lambda s: s.get(Job, job_id))
    if job is None:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
    return job


@router.get("/dashboard/api/jobs")
def jobs(state: Annotated[ServerState, Depends(server)], status: str | None = None, model: str | None = None,
         limit: Annotated[int, Query(ge=1)] = 100) -> dict[str, Any]:
    """Newest jobs first, filtered by status and by a part of the base model's name, each with
    its progress (last trained step of the total) and the model it made."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    if status:
        query = query.where(Job.status == status)
    if model:
        query = query.where(Job.base_model.contains(model))
    query = query.limit(min(limit, state.limits.max_list_limit))
    rows = state.registry.read(lambda s: list(s.scalars(query)))
    ids = [j.id for j in rows]
    done: dict[str, int] = {}
    total: dict[str, int] = {}
    if ids:
        done = dict(state.registry.read(lambda s: list(s.execute(
            select(Event.job_id, func.max(Event.step)).where(Event.job_id.in_(ids), Event.type == "train")
            .group_by(Event.job_id)))))
        for job_id, data in state.registry.read(lambda s: list(s.execute(
                select(Event.job_id, Event.data).where(Event.job_id.in_(ids), Event.type == "start")
                .order_by(Event.id)))):
            total[job_id] = (data or {}).get("total_steps") or total.get(job_id)
    names = dict(state.registry.read(lambda s: list(s.execute(
        select(Model.job_id, Model.name).where(Model.job_id.in_(ids)))))) if ids else {}
    return {"data": [{"id": j.id, "status": j.status, "base_model": j.base_model, "method": j.method,
                      "created_at": j.created_at, "finished_at": j.finished_at, "suffix": j.suffix,
                      "step": done.get(j.id) or 0, "total_steps": total.get(j.id), "model": names.get(j.id),
                      "error": public_text(j.error, job_names(j)) if j.error else None} for j in rows]}


@router.get("/dashboard/api/jobs/{job_id}")
def job_detail(job_id: str, state: Annotated[ServerState, Depends(server)],
               after: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    """The job's loss series (train, validation, baseline) from event `after` on, its total
    steps, its resolved recipe flattened to keys, and the model it made."""
    job = _job(state, job_id)
    rows = state.registry.read(lambda s: list(s.scalars(
        select(Event).where(Event.job_id == job_id, Event.id > after,
                            Event.type.in_(("train", "eval", "start"))).order_by(Event.id))))
    train, valid, baseline, total = [], [], [], None
    for event in rows:
        data = event.data or {}
        if event.type == "start":
            total = data.get("total_steps") or total
        elif isinstance(data.get("loss"), int | float) and data.get("step") is not None:
            point = [int(data["step"]), float(data["loss"])]
            (train if event.type == "train" else baseline if data.get("baseline") else valid).append(point)
    model = state.registry.read(lambda s: s.scalar(select(Model.name).where(Model.job_id == job_id)))
    return {"id": job.id, "status": job.status, "last_event": rows[-1].id if rows else after,
            "total_steps": total, "series": {"train": train, "valid": valid, "baseline": baseline},
            "recipe": public_value(flatten(job.recipe or {}), job_names(job)), "model": model,
            "report": _report_files(job)}


def _report_files(job: Job) -> list[str]:
    if not job.run_dir:
        return []
    return [name for name in REPORT_NAMES if (Path(job.run_dir) / name).is_file()]


@router.get("/dashboard/api/jobs/{job_id}/report.json")
def report_json(job_id: str, state: Annotated[ServerState, Depends(server)]) -> Any:
    """The evaluation report `tunesmith eval` writes into the run folder, when it exists."""
    job = _job(state, job_id)
    report = json.loads(_report_path(state, job_id, "report.json").read_text(encoding="utf-8"))
    return public_value(report, job_names(job))


@router.get("/dashboard/api/jobs/{job_id}/report.html")
def report_html(job_id: str, state: Annotated[ServerState, Depends(server)]) -> HTMLResponse:
    text = _report_path(state, job_id, "report.html").read_text(encoding="utf-8")
    return HTMLResponse(public_text(text, job_names(_job(state, job_id))))


def _report_path(state: ServerState, job_id: str, name: str) -> Path:
    job = _job(state, job_id)
    if name not in _report_files(job):
        raise APIError(404, f"job {job_id} has no {name} yet; `tunesmith eval` writes it", code="no_report")
    return Path(str(job.run_dir)) / name


# --- models -----------------------------------------------------------------------------


@router.get("/dashboard/api/models/{name:path}")
def model_detail(name: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    """A tuned model with its aliases, its lineage (itself, parent, grandparent...) and the
    job whose run folder may hold the evaluation report."""
    try:
        model = state.registry.model(name)
    except RegistryError:
        raise not_found("model", name, "model") from None
    lineage = [{"id": m.id, "name": m.name, "job": m.job_id, "created_at": m.created_at,
                "deleted": m.deleted_at is not None, "evaluation": m.evaluation}
               for m in state.registry.lineage(model.id)]
    view = model_view(model, state.registry.aliases(model.id))
    view.pop("path")  # a server path says nothing to a browser user
    job = state.registry.read(lambda s: s.get(Job, model.job_id)) if model.job_id else None
    return public_value({**view, "lineage": lineage, "report": _report_files(job) if job else []})


# --- data -------------------------------------------------------------------------------


@router.get("/dashboard/api/datasets")
def datasets(state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    """Uploaded files (each can be checked) and the dataset versions jobs trained on."""
    files = state.registry.read(lambda s: list(s.scalars(
        select(File).where(File.deleted_at.is_(None), File.purpose == "fine-tune")
        .order_by(File.created_at.desc()).limit(state.limits.max_list_limit))))
    versions = [dataset_view(v) for v in state.registry.datasets()]
    for version in versions:
        version.pop("source_path")
    return public_value({"files": [{"id": f.id, "filename": f.filename, "bytes": f.bytes,
                                    "created_at": f.created_at} for f in files], "versions": versions})


class _Checks:
    """Recent check results by (content hash, model): a file's content never changes."""

    def __init__(self, size: int = CHECK_CACHE):
        self.size = size
        self.items: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> dict[str, Any] | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
            return self.items.get(key)

    def put(self, key: tuple[str, str], value: dict[str, Any]) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)


_checks = _Checks()


@router.get("/dashboard/api/files/{file_id}/check")
def check_file(file_id: str, state: Annotated[ServerState, Depends(server)],
               model: str = BUNDLED_MODEL) -> dict[str, Any]:
    """`tunesmith data check` on an uploaded file with `model`'s tokenizer: findings with the
    file's own name and line numbers, token statistics and a histogram of example lengths."""
    from tunesmith.errors import ModelError
    from tunesmith.serve import policy

    policy.check_api_model(model, state.registry)
    row = live_file(state, file_id)
    key = (row.sha256, model)
    found = _checks.get(key)
    if found is None:
        try:
            found = _check(row.location, model)
        except ModelError:  # the same refusal as check_api_model: it must not tell what exists
            raise APIError(400, f"model {model[:200]!r} is not available through the API: "
                                f"{policy.MODEL_HELP}", param="model", code="model_not_available") from None
        _checks.put(key, found)
    return public_value(_named(found, row.location, row.filename))


def _check(location: str, model: str) -> dict[str, Any]:
    from tunesmith.data.check import check_dataset

    report = check_dataset(location, model=model, epochs="auto").to_dict()
    report.pop("preview", None)
    report["histogram"] = token_histogram(location, model) if report.get("tokens") else None
    return report


def _named(report: dict[str, Any], location: str, filename: str) -> dict[str, Any]:
    """Server paths become the user's file name: '/srv/.../ab/cd.jsonl:3' -> 'bad.jsonl line 3'."""
    text = json.dumps(report)
    text = re.sub(re.escape(json.dumps(location)[1:-1]) + r":(\d+)", rf"{filename} line \1", text)
    return json.loads(text.replace(json.dumps(location)[1:-1], filename))


def token_histogram(location: str, model: str, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Counts of examples per token-length bin, from the model's own chat template.

    The data check keeps only summary statistics, so lengths are measured again here on at
    most HISTOGRAM_EXAMPLES examples (rendered to text and tokenized in one batch).
    """
    import numpy as np

    from tunesmith.data.check import _load_renderer
    from tunesmith.data.load import iter_parsed

    renderer = _load_renderer(model, "assistant")
    texts = []
    for parsed in iter_parsed(location, "auto"):
        if parsed.record is None or any(f.severity == "error" for f in parsed.findings):
            continue
        try:
            texts.append(renderer.text_of(parsed.record))
        except Exception:  # the check already reported why it cannot be rendered
            continue
        if len(texts) >= HISTOGRAM_EXAMPLES:
            break
    if not texts:
        return {"edges": [], "counts": [], "examples": 0}
    lengths = [len(ids) for ids in renderer.tokenizer(texts, add_special_tokens=False)["input_ids"]]
    counts, edges = np.histogram(lengths, bins=min(bins, max(1, len(set(lengths)))))
    return {"edges": [round(float(e), 1) for e in edges], "counts": [int(c) for c in counts],
            "examples": len(lengths)}
