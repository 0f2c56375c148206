"""/v1/advice: `tunesmith advise` over HTTP, on an uploaded file.

Every field is hostile: the model goes through the one model check (policy.check_api_model),
data is named only by uploaded file ids, graders through the one grader check, and every
number that sets how long the advice runs (examples, reply length, k, probe steps) is capped
here. An advice run generates, so it holds one of the server's generation slots.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from tunesmith.errors import TunesmithError
from tunesmith.serve import policy
from tunesmith.serve.errors import APIError, not_found
from tunesmith.serve.files import live_file
from tunesmith.serve.redact import public_value
from tunesmith.serve.state import ServerState, server

router = APIRouter()
MAX_EXAMPLES = 50
MAX_NEW_TOKENS = 128
MAX_PROBE_STEPS = 5


class AdviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(max_length=300)]
    training_file: Annotated[str, Field(max_length=64)]
    validation_file: Annotated[str, Field(max_length=64)] | None = None
    max_examples: Annotated[int, Field(ge=1, le=MAX_EXAMPLES)] = 20
    max_new_tokens: Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS)] = 64
    few_shot_k: Annotated[int, Field(ge=1, le=8)] = 3
    retrieval_k: Annotated[int, Field(ge=1, le=8)] = 3
    probe_steps: Annotated[int, Field(ge=1, le=MAX_PROBE_STEPS)] = 2
    graders: Annotated[list[dict[str, Any]], Field(max_length=8)] | None = None
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0


@router.post("/v1/advice")
def create_advice(request: AdviceCreate, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    from tunesmith.errors import RecipeError
    from tunesmith.recipe import build_recipe

    policy.check_api_model(request.model, state.registry)
    train = live_file(state, request.training_file, "training_file")
    held = live_file(state, request.validation_file, "validation_file") if request.validation_file else None
    evaluation: dict[str, Any] = {
        "max_examples": request.max_examples, "max_new_tokens": request.max_new_tokens,
        "few_shot_k": request.few_shot_k, "retrieval_k": request.retrieval_k, "bootstrap_seed": request.seed}
    if request.graders is not None:
        evaluation["graders"] = request.graders
    raw = {"base_model": request.model, "data": {"train": train.location}, "evaluation": evaluation,
           "training": {"seed": request.seed}, "output": {"dir": str(state.runs_dir.resolve())}}
    policy.check_graders(raw, state.access.allow_python_graders, method_grader=False)
    try:
        recipe = build_recipe(raw, origin="request")
    except RecipeError as exc:
        raise APIError(400, str(exc), param=exc.where or "graders", code="invalid_value") from None
    if not state.generations.acquire(timeout=state.limits.generation_wait_seconds):
        raise APIError(429, "too many generations are running; try again shortly", code="server_busy")
    try:
        from tunesmith.hardware import pick_device
        from tunesmith.iterate.advise import advise

        device = str(pick_device("auto"))
        recipe.training.device = device
        result = advise(recipe, heldout=held.location if held else None, probe_steps=request.probe_steps,
                        device=device)
    except TunesmithError as exc:
        names = {train.location: train.id, **({held.location: held.id} if held else {})}
        raise APIError(400, str(public_value(str(exc), names)), code="advice_failed") from None
    finally:
        state.generations.release()
    from tunesmith.store.advice import record_advice

    row = record_advice(state.registry, train.location, result, held.location if held else None)
    return advice_object(row, train.id, held.id if held else None)


@router.get("/v1/advice")
def list_advice(state: Annotated[ServerState, Depends(server)],
                limit: Annotated[int, Query(ge=1)] = 20) -> dict[str, Any]:
    from tunesmith.store.advice import advice_list

    rows = advice_list(state.registry, limit=min(limit, state.limits.max_list_limit))
    return {"object": "list", "data": [advice_object(r) for r in rows]}


@router.get("/v1/advice/{advice_id}")
def get_advice(advice_id: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    from tunesmith.store.advice import advice

    row = advice(state.registry, advice_id[:64])
    if row is None:
        raise not_found("advice", advice_id, "advice_id")
    return advice_object(row)


def advice_object(row: Any, training_file: str | None = None,
                  validation_file: str | None = None) -> dict[str, Any]:
    """The advice as a caller sees it: no server path (the data is named by its dataset version)."""
    report = dict(row.report or {})
    names = {str(report.get("data") or ""): training_file or row.dataset_id}
    names.pop("", None)
    for key in ("data", "heldout"):
        report.pop(key, None)
    return public_value({"id": row.id, "object": "advice", "created_at": int(row.created_at),
                         "model": row.base_model, "dataset_id": row.dataset_id,
                         "heldout_dataset_id": row.heldout_dataset_id, "training_file": training_file,
                         "validation_file": validation_file, **report}, names)
