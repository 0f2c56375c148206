"""/v1/fine_tuning/jobs: create, list, retrieve, cancel, pause, resume, events, checkpoints.

A job is a recipe like any other: the request's model, files, method and hyperparameters
are mapped onto recipe keys, and tunesmith-only settings ride in the `tunesmith`
extension ({"tunesmith": {"set": {"training.max_steps": 50}}}), checked like a recipe file.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.errors import RecipeError
from tunesmith.recipe import apply_override, build_recipe
from tunesmith.serve import policy, queue
from tunesmith.serve.errors import APIError, not_found
from tunesmith.serve.files import live_file
from tunesmith.serve.objects import checkpoint_object, event_object, job_object, page
from tunesmith.serve.pagination import after_condition
from tunesmith.serve.state import ServerState, server
from tunesmith.store.schema import Checkpoint, Event, Job, Model, new_id

router = APIRouter()
AutoInt = Literal["auto"] | Annotated[int, Field(gt=0, le=10**6)]
AutoFloat = Literal["auto"] | Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Strict):
    n_epochs: AutoInt = "auto"
    batch_size: AutoInt = "auto"
    learning_rate_multiplier: AutoFloat = "auto"
    beta: AutoFloat = "auto"  # dpo
    compute_multiplier: AutoFloat = "auto"  # reinforcement
    eval_interval: AutoInt = "auto"
    eval_samples: AutoInt = "auto"
    reasoning_effort: str = "default"


class MethodSettings(_Strict):
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    grader: dict[str, Any] | None = None


class Method(_Strict):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: MethodSettings | None = None
    dpo: MethodSettings | None = None
    reinforcement: MethodSettings | None = None


class Extension(_Strict):
    set: dict[str, Any] = Field(default_factory=dict, description="recipe key -> value")


class JobCreate(_Strict):
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: Hyperparameters | None = None
    method: Method | None = None
    suffix: Annotated[str, Field(max_length=64)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    metadata: Annotated[dict[str, Annotated[str, Field(max_length=512)]], Field(max_length=16)] | None = None
    integrations: list[dict[str, Any]] | None = None
    tunesmith: Extension | None = None


@router.post("/v1/fine_tuning/jobs")
def create_job(request: JobCreate, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    if request.integrations:
        raise APIError(400, "integrations are not supported; metrics are in the job's events",
                       param="integrations")
    policy.check_api_model(request.model, state.registry)
    train = live_file(state, request.training_file, "training_file")
    validation = live_file(state, request.validation_file, "validation_file") \
        if request.validation_file else None
    method = request.method or Method(type="supervised")
    settings = getattr(method, method.type) or MethodSettings()
    hyper = request.hyperparameters or settings.hyperparameters
    job_id = new_id("ftjob-")
    recipe = _recipe(request, job_id, method.type, hyper, settings.grader, train.location,
                     validation.location if validation else None, state)
    shown = {"n_epochs": hyper.n_epochs, "batch_size": hyper.batch_size,
             "learning_rate_multiplier": hyper.learning_rate_multiplier}
    if method.type == "dpo":
        shown["beta"] = hyper.beta
    job = state.registry.create_job(
        recipe, id=job_id, status="validating_files", suffix=request.suffix,
        run_dir=str((state.runs_dir / job_id).resolve()), training_file=train.id,
        validation_file=validation.id if validation else None, hyperparameters=shown,
        seed=recipe["training"]["seed"], user_metadata=request.metadata)
    queue.note(state.registry, job.id, "Created fine-tuning job")
    return job_object(state.registry.job(job.id), None)


def _recipe(request: JobCreate, job_id: str, method: str, hyper: Hyperparameters,
            grader: dict[str, Any] | None, train: str, validation: str | None,
            state: ServerState) -> dict[str, Any]:
    from tunesmith.serve.methods import apply_api_method

    extension: dict[str, Any] = {}
    for key, value in (request.tunesmith.set if request.tunesmith else {}).items():
        try:
            apply_override(extension, f"{key}={_yaml(value)}")
        except RecipeError as exc:
            raise APIError(400, str(exc), param=f"tunesmith.set.{key}", code="invalid_value") from None
    policy.check_extension(extension)
    raw = {**extension, "base_model": request.model, "training": extension.get("training") or {},
           "data": {**(extension.get("data") or {}), "train": train, "validation": validation},
           "output": {"dir": str(state.runs_dir.resolve()), "name": job_id}}
    # The hosted API's method object maps onto the recipe the same way for every caller.
    body: dict[str, Any] = {"hyperparameters": hyper.model_dump(exclude_unset=True)}
    if grader is not None:
        body["grader"] = grader
    try:
        raw = apply_api_method(raw, {"type": method, method: body})
        policy.check_graders(raw, state.access.allow_python_graders, method == "reinforcement")
        if request.seed is not None:
            raw["training"]["seed"] = request.seed
        recipe = build_recipe(raw, origin="request")
    except RecipeError as exc:
        raise APIError(400, str(exc), param=exc.where or "tunesmith.set", code="invalid_value") from None
    return recipe.model_dump(mode="json")


def _yaml(value: Any) -> str:
    import json

    return json.dumps(value)  # JSON is YAML: the value keeps its type through apply_override


def _job(state: ServerState, job_id: str) -> Job:
    job = state.registry.read(lambda s: s.get(Job, job_id))
    if job is None:
        raise not_found("fine-tuning job", job_id, "fine_tuning_job_id")
    return job


def _model_names(session: Session, job_ids: list[str]) -> dict[str, str]:
    """The tuned models' names of these jobs, read in the caller's snapshot."""
    if not job_ids:
        return {}
    rows = session.execute(select(Model.job_id, Model.name).where(Model.job_id.in_(job_ids)))
    return {job_id: name for job_id, name in rows}


def _view(state: ServerState, job: Job) -> dict[str, Any]:
    """A job just read or written (so lost jobs were settled a moment ago) with its model's name."""
    names = state.registry.read_raw(lambda s: _model_names(s, [job.id]))
    return job_object(job, names.get(job.id))


@router.get("/v1/fine_tuning/jobs")
def list_jobs(request: Request, state: Annotated[ServerState, Depends(server)],
              after: str | None = None, limit: Annotated[int, Query(ge=1)] = 20) -> dict[str, Any]:
    limit = min(limit, state.limits.max_list_limit)
    query = select(Job)
    if after:
        anchor = _job(state, after)
        query = query.where(after_condition(Job.created_at, Job.id, anchor.created_at, anchor.id, True))
    wanted = {k[len("metadata["):-1]: v for k, v in request.query_params.items()
              if k.startswith("metadata[") and k.endswith("]")}
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1 if not wanted else None)

    def work(session: Session) -> tuple[list[Job], bool, dict[str, str]]:
        rows = list(session.scalars(query))
        if wanted:  # metadata is JSON: filtered here so it works on every database
            rows = [j for j in rows if all((j.user_metadata or {}).get(k) == v for k, v in wanted.items())]
        shown = rows[:limit]
        return shown, len(rows) > limit, _model_names(session, [j.id for j in shown])

    shown, more, names = state.registry.read(work)  # one snapshot: the page and its names agree
    return page([job_object(j, names.get(j.id)) for j in shown], more)


@router.get("/v1/fine_tuning/jobs/{job_id}")
def retrieve_job(job_id: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    return _view(state, _job(state, job_id))


@router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
def cancel_job(job_id: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    return _view(state, queue.request_stop(state.registry, job_id, "cancel"))


@router.post("/v1/fine_tuning/jobs/{job_id}/pause")
def pause_job(job_id: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    return _view(state, queue.request_stop(state.registry, job_id, "pause"))


@router.post("/v1/fine_tuning/jobs/{job_id}/resume")
def resume_job(job_id: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    return _view(state, queue.resume(state.registry, job_id))


@router.get("/v1/fine_tuning/jobs/{job_id}/events")
def list_events(job_id: str, state: Annotated[ServerState, Depends(server)], after: str | None = None,
                limit: Annotated[int, Query(ge=1)] = 20) -> dict[str, Any]:
    """Newest first, as the hosted API lists them."""
    _job(state, job_id)
    limit = min(limit, state.limits.max_list_limit)
    query = select(Event).where(Event.job_id == job_id)
    if after:
        try:
            query = query.where(Event.id < int(after.removeprefix("ftevent-")))
        except ValueError:
            raise APIError(400, f"bad event id {after!r}", param="after") from None
    rows = state.registry.read(lambda s: list(s.scalars(query.order_by(Event.id.desc()).limit(limit + 1))))
    return page([event_object(e) for e in rows[:limit]], len(rows) > limit)


@router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
def list_checkpoints(job_id: str, state: Annotated[ServerState, Depends(server)], after: str | None = None,
                     limit: Annotated[int, Query(ge=1)] = 10) -> dict[str, Any]:
    """Newest first; each names the model it would be (the job's model, or the job id until then)."""
    job = _job(state, job_id)
    limit = min(limit, state.limits.max_list_limit)
    query = select(Checkpoint).where(Checkpoint.job_id == job_id)
    if after:
        anchor = state.registry.read(lambda s: s.get(Checkpoint, after))
        if anchor is None or anchor.job_id != job_id:
            raise not_found("checkpoint", after, "after")
        query = query.where(Checkpoint.step < anchor.step)
    query = query.order_by(Checkpoint.step.desc()).limit(limit + 1)
    rows, names = state.registry.read(lambda s: (list(s.scalars(query)), _model_names(s, [job.id])))
    name = names.get(job.id) or f"ft:{job.base_model}:{job.id}"
    return page([checkpoint_object(c, name) for c in rows[:limit]], len(rows) > limit)
