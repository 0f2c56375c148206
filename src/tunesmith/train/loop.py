"""The one training loop. A method is an objective; everything else is shared.

    pre-flight (model, data, auto values, budgets, disk) -> before any compute is spent
    for each step: micro-batches -> summed loss / all trained units of the step -> backward
                   clip -> AdamW -> schedule -> metrics -> maybe evaluate, checkpoint, stop
    final adapter or model -> run/final/
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from tunesmith import allocator
from tunesmith.data.pack import pack_groups, plan_epoch
from tunesmith.data.templates import apply_chat_template_choice
from tunesmith.errors import ModelError, RecipeError, TunesmithError
from tunesmith.evaluate.heldout import evaluate
from tunesmith.hardware import Precision, choose_dtype, pick_device, training_precision
from tunesmith.model.adapters import apply_adapter, compute_lora_in_base_dtype, untrained_experts_note
from tunesmith.model.loading import check_remote_code, load_model, load_tokenizer, resolve_model
from tunesmith.recipe import Recipe
from tunesmith.train import checkpoint as ckpt
from tunesmith.train import checkpoint_parallel as pckpt
from tunesmith.train import distributed as dist
from tunesmith.train import stopping
from tunesmith.train.auto import resolve_auto
from tunesmith.train.data import prepare_data
from tunesmith.train.objectives import Objective, make_objective
from tunesmith.train.optimizer import adamw, keep_fused
from tunesmith.train.reporting import Fanout, MetricsFile, MLflowReporter, Reporter, TensorBoardReporter
from tunesmith.train.run import RunDir, RunFolderGone


class TrainingDiverged(TunesmithError):
    """Loss or gradient became NaN/inf; the last good checkpoint is kept."""


@dataclass(slots=True)
class TrainResult:
    run_dir: Path
    status: Outcome
    steps: int
    final_dir: Path | None
    best_step: int | None
    best_validation_loss: float | None


# --- set-up ------------------------------------------------------------------------------


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if schedule == "linear":
            return max(0.0, 1 - progress)
        return 1.0

    return factor


def _check_disk(run: RunDir, model: torch.nn.Module, keep: int) -> None:
    trained = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    # weights + two AdamW moments per checkpoint, the kept ones plus one being written, plus final
    need = trained * 3 * (keep + 1) + trained
    free = shutil.disk_usage(run.path).free
    if free < need * 1.2:
        raise TunesmithError(
            f"not enough disk for checkpoints: about {need / 2**20:.0f} MiB needed, "
            f"{free / 2**20:.0f} MiB free", where=str(run.path),
            fix="free space, lower training.keep_checkpoints or set output.dir elsewhere")


def _reporters(recipe: Recipe, run: RunDir, extra: Sequence[Reporter]) -> Fanout:
    reporters: list[Reporter] = [MetricsFile(run.metrics_file), *extra]
    if "tensorboard" in recipe.training.report_to:
        reporters.append(TensorBoardReporter(run.path / "tensorboard"))
    if "mlflow" in recipe.training.report_to:
        reporters.append(MLflowReporter(run.path.name, recipe.model_dump(mode="json")["training"]))
    return Fanout(reporters)


# --- the loop ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Progress:
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best_loss: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    tokens_seen: int = 0


class Outcome(StrEnum):
    """How the step loop ended (the end record's status; a TrainResult's status)."""

    SUCCEEDED = "succeeded"  # the planned steps are done; final/ is written
    STOPPED = "stopped"  # asked to stop: a checkpoint of the last step, no final model
    STOPPED_EARLY = "stopped_early"  # early stopping: final/ is written, the run succeeded

    @property
    def run_status(self) -> str:
        """The status run.json keeps: an early-stopped run succeeded."""
        return "succeeded" if self is Outcome.STOPPED_EARLY else self.value


@dataclass(slots=True)
class _Session:
    """What set-up prepares for the step loop and the finish."""

    ctx: dist.Distributed
    run: RunDir
    resolved: Recipe
    device: torch.device
    tokenizer: Any
    objective: Objective
    data: Any
    budget: int
    model: torch.nn.Module
    parallel: dist.Parallel
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    precision: Precision
    lengths: list[int]
    groups: list[int] | None  # packed apart: replayed and task examples (data/pack.py pack_groups)
    total_steps: int
    progress: _Progress
    reporter: Fanout
    saved_step: int = 0  # a checkpoint of step 0 holds nothing new

    def evaluate(self) -> dict[str, float]:
        """Held-out metrics of the model as it is now, computed in the training precision."""
        with self.precision.autocast(self.device):
            return evaluate(self.model, self.objective, self.data.validation, self.budget, self.device,
                            self.parallel)

    def save(self) -> None:
        """A checkpoint of the current step; older ones pruned, the best kept."""
        self.run.require()
        progress = self.progress
        state = {"progress": asdict(progress), "scheduler": self.scheduler.state_dict()}
        saved = pckpt.save_checkpoint(self.ctx, self.run.checkpoints, progress.step, self.model,
                                      self.optimizer, state)
        self.reporter.report({"type": "checkpoint", "step": progress.step, "path": str(saved.path)})
        protect = {progress.best_step} if progress.best_step is not None else set()
        if self.ctx.is_main:
            ckpt.prune(self.run.checkpoints, self.resolved.training.keep_checkpoints, protect)
        self.saved_step = progress.step


def train(recipe: Recipe | None = None, *, resume_dir: Path | str | None = None,
          overrides: Sequence[str] = (), reporters: Sequence[Reporter] = (),
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train a recipe into a new run directory, or continue the run in `resume_dir`, with
    `overrides` (`key=value`) of the settings a resume may change (train/run.py RESUMABLE).

    A named run (output.name) whose folder holds an unfinished run is resumed
    automatically from its last complete checkpoint. Under torchrun every rank calls this;
    rank 0 alone writes the run directory and sends records to `reporters`. `should_stop` is
    asked before every step; when it says so the loop saves a checkpoint and ends "stopped".
    """
    if overrides and resume_dir is None:
        raise TypeError("overrides go with resume_dir; a new run takes them in its recipe")
    allocator.tune()  # a library caller gets what `tunesmith train` gets (a no-op the second time)
    ctx = dist.setup()
    try:
        result = _train(ctx, recipe, resume_dir, tuple(overrides), reporters, should_stop)
        dist.barrier(ctx)
        return result
    except RuntimeError as exc:
        lost = dist.peer_lost(ctx, exc)
        if lost is None:
            raise
        raise lost from exc
    finally:
        dist.teardown(ctx)


def _open_run(recipe: Recipe | None, resume_dir: Path | str | None,
              overrides: tuple[str, ...]) -> tuple[RunDir, Recipe]:
    if resume_dir is not None:
        run = RunDir(Path(resume_dir))
        if not run.recipe_file.exists():
            raise TunesmithError("not a run directory (no recipe.yaml)", where=str(run.path))
        recipe = run.resume_recipe(overrides)
    elif recipe is None:
        raise TypeError("train() needs a recipe or resume_dir")
    else:
        run = RunDir.create(recipe)
        if run.recipe_file.exists():
            if run.info().get("status") == "succeeded":
                raise TunesmithError("a finished run already has this name", where=str(run.path),
                                     fix="choose another output.name, or remove the folder")
            recipe = run.read_recipe()  # an interrupted named run continues with its own recipe
    return run, recipe


def _train(ctx: dist.Distributed, recipe: Recipe | None, resume_dir: Path | str | None,
           overrides: tuple[str, ...], reporters: Sequence[Reporter],
           should_stop: Callable[[], bool] | None) -> TrainResult:
    """Set-up, the step loop, the finish: each its own function, the outcome typed."""
    session = _set_up(ctx, recipe, resume_dir, overrides, reporters)
    outcome = _run_steps(session, should_stop)
    return _finish(session, outcome)


def _set_up(ctx: dist.Distributed, recipe: Recipe | None, resume_dir: Path | str | None,
            overrides: tuple[str, ...], reporters: Sequence[Reporter]) -> _Session:
    """Pre-flight, model, optimizer and schedule, resumed state, the start record."""
    run, recipe = dist.share_run(ctx, *(_open_run(recipe, resume_dir, overrides) if ctx.is_main
                                        else (None, None)))
    torch.manual_seed(recipe.training.seed)

    # Pre-flight: every check that can fail does so before the model's weights are loaded.
    device = dist.place(ctx, pick_device(recipe.training.device))
    ref = resolve_model(recipe.base_model, recipe.revision)
    check_remote_code(ref, recipe.trust_remote_code)
    tokenizer = load_tokenizer(ref, recipe.trust_remote_code)
    apply_chat_template_choice(tokenizer, recipe.data.chat_template)  # saved with final/
    objective = make_objective(recipe.method, recipe.training.loss_chunk_tokens, recipe)
    data = prepare_data(recipe, tokenizer, recipe.data.max_length, objective.render_example)
    resolved, chosen = resolve_auto(recipe, len(data.train), data.longest, device.type == "cuda")
    training = resolved.training
    budget = int(training.micro_batch_tokens)
    if budget < data.longest:
        raise RecipeError(
            f"micro_batch_tokens={budget} cannot hold the longest example ({data.longest} tokens)",
            where="training.micro_batch_tokens",
            fix=f"set it to at least {data.longest} or lower data.max_length")
    dtype = choose_dtype(training.dtype, device, shape=(min(budget, 2048), 1024, 1024),
                         full=resolved.adapter.kind == "full")
    if training.dtype == "auto":  # the measured choice and why: in recipe.yaml, run.json, the start line
        shared = dist.broadcast_text(ctx, dtype.name if ctx.is_main else None)  # every rank takes rank 0's
        dtype = dtype if shared == dtype.name else choose_dtype(shared, device)
        training.dtype = dtype.name
        chosen.update(dtype.record())
    full = resolved.adapter.kind == "full"
    precision = training_precision(dtype.dtype, full)
    run.write_recipe(resolved)

    model = load_model(ref, resolved.trust_remote_code, precision.weights, objective.head)
    model.config.use_cache = False
    model = apply_adapter(model, resolved.adapter).to(device)
    compute_lora_in_base_dtype(model)  # over a bf16 base: bf16 products, fp32 adapter weights
    expert_note = untrained_experts_note(model)  # reported once the reporter exists
    if training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # The hook that makes the embedding's output require grad is for a frozen embedding (LoRA).
        # transformers adds it with checkpointing; a trained embedding's output requires grad
        # anyway, and the hook would turn off train/loss.py's in-place tied-embedding gradient.
        if model.get_input_embeddings().weight.requires_grad:
            if hasattr(model, "disable_input_require_grads"):
                model.disable_input_require_grads()
        elif hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    _check_disk(run, model, training.keep_checkpoints)
    # Before any checkpoint is loaded: a reference model is the untrained one.
    objective.prepare(model, tokenizer, [data.train, data.validation], budget, device)
    parallel = dist.wrap(ctx, model, objective, full, device)

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise RecipeError("nothing to train: every weight is frozen", where="adapter.freeze_layers")
    optimizer = adamw(params, float(training.learning_rate), training.weight_decay)
    lengths = [len(e) for e in data.train]
    steps_per_epoch = math.ceil(len(lengths) / int(training.batch_size))
    total_steps = steps_per_epoch * int(training.epochs)
    if training.max_steps:
        total_steps = min(total_steps, training.max_steps)
    warmup = int(total_steps * training.warmup_ratio)
    schedule = lr_lambda(training.schedule, warmup, total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    progress = _Progress()
    latest = ckpt.latest_checkpoint(run.checkpoints)
    if latest is not None and latest.step > total_steps:
        raise RecipeError(
            f"the run would end at step {total_steps}, before its last checkpoint (step {latest.step})",
            where="training.max_steps" if training.max_steps else "training.epochs",
            fix=f"let it end at step {latest.step} or later")
    if latest is not None:
        state = pckpt.restore(ctx, latest, model, optimizer)
        keep_fused(optimizer)
        scheduler.load_state_dict(state["scheduler"])
        progress = _Progress(**state["progress"])
    if run.metrics_file.exists():
        run.truncate_metrics(progress.step)  # what killed attempts logged past the checkpoint

    trainable = sum(p.numel() for p in params)
    run.update_info(status="running", base_model=resolved.base_model, method=resolved.method,
                    adapter=resolved.adapter.kind, auto=chosen, precision=precision.record(),
                    data=data.summary(),
                    total_steps=total_steps, trainable_parameters=trainable,
                    resumed_from=progress.step if latest else None, started=time.time())
    reporter = _reporters(resolved, run, reporters) if ctx.is_main else Fanout([])
    reporter.report({"type": "start", "step": progress.step, "total_steps": total_steps, "auto": chosen,
                     "trainable_parameters": trainable, "data": data.summary(), "run_dir": str(run.path)})
    if expert_note:
        reporter.report({"type": "event", "step": progress.step, "level": "warning", "message": expert_note})

    return _Session(ctx, run, resolved, device, tokenizer, objective, data, budget, model, parallel,
                    params, optimizer, scheduler, precision, lengths, pack_groups(data.train), total_steps,
                    progress, reporter,
                    saved_step=latest.step if latest is not None else 0)


def _run_steps(s: _Session, should_stop: Callable[[], bool] | None) -> Outcome:
    """Optimizer steps until the run's end, a stop request or early stopping; evaluations and
    checkpoints on their cadence. On any failure the run folder says so before it propagates."""
    ctx, run, data, progress, reporter = s.ctx, s.run, s.data, s.progress, s.reporter
    training, budget, lengths = s.resolved.training, s.budget, s.lengths
    if progress.step == 0 and data.validation:
        # The untrained model's held-out loss: the point every later evaluation is judged against.
        reporter.report({"type": "eval", "step": 0, "baseline": True,
                         **s.evaluate()})
    status = Outcome.SUCCEEDED
    plans: dict[int, list[list[list[int]]]] = {}
    s.model.train()
    try:
        while progress.step < s.total_steps:
            if dist.agree(ctx, should_stop is not None and should_stop()):
                status = Outcome.STOPPED
                break
            run.require()
            if progress.epoch not in plans:
                plans = {progress.epoch: plan_epoch(lengths, int(training.batch_size), budget,
                                                    training.seed, progress.epoch, s.groups)}
            plan = plans[progress.epoch]
            started = time.perf_counter()
            step_examples = [([data.train[i] for i in micro], real) for micro, real in
                             dist.shard_step(ctx, plan[progress.step_in_epoch], lengths, budget, s.groups)]
            metrics = _train_step(s.parallel, s.optimizer, s.params, training.max_grad_norm, step_examples,
                                  s.device, s.precision)
            if not (math.isfinite(metrics["loss"]) and math.isfinite(metrics["grad_norm"])):
                raise TrainingDiverged(
                    f"loss became {metrics['loss']} (grad norm {metrics['grad_norm']}) at step "
                    f"{progress.step + 1}", where=str(run.path),
                    fix="lower training.learning_rate or keep max_grad_norm set; the last good "
                        "checkpoint is kept")
            s.scheduler.step()
            elapsed = time.perf_counter() - started
            progress.step += 1
            progress.step_in_epoch += 1
            progress.tokens_seen += int(metrics["real_tokens"])
            reporter.report({"type": "train", "step": progress.step, "epoch": progress.epoch,
                             "learning_rate": s.scheduler.get_last_lr()[0],
                             "tokens_per_second": metrics["real_tokens"] / max(elapsed, 1e-9),
                             "elapsed": elapsed, **metrics})
            if progress.step_in_epoch == len(plan):
                progress.epoch += 1
                progress.step_in_epoch = 0
            last = progress.step == s.total_steps
            saved = stop_early = False
            if data.validation and (progress.step % int(training.eval_every) == 0 or last):
                result = s.evaluate()
                improved = progress.best_loss is None or result["loss"] < progress.best_loss
                if improved:
                    progress.best_loss, progress.best_step, progress.bad_evals = \
                        result["loss"], progress.step, 0
                else:
                    progress.bad_evals += 1
                reporter.report({"type": "eval", "step": progress.step, "best": improved, **result})
                patience = training.early_stopping_patience
                stop_early = patience is not None and progress.bad_evals >= patience
                if improved:
                    s.save()
                    saved = True
            if not saved and (progress.step % int(training.save_every) == 0 or last):
                s.save()
            if stop_early:
                reporter.report({"type": "event", "step": progress.step,
                                 "message": f"early stopping: no improvement in {patience} evaluations"})
                status = Outcome.STOPPED_EARLY
                break
    except TrainingDiverged as exc:
        with stopping.unwinding():
            run.update_info(status="failed", error=exc.message, finished=time.time())
            reporter.report({"type": "event", "step": progress.step, "message": exc.message,
                             "level": "error"})
            reporter.close()
        raise
    except RunFolderGone:
        reporter.close()
        raise
    except BaseException:
        with stopping.unwinding():  # a second signal must not cut these records short
            if run.path.is_dir():
                run.update_info(status="interrupted", finished=time.time())
            reporter.close()
        raise
    return status


def _finish(s: _Session, status: Outcome) -> TrainResult:
    """The final model (unless stopped: then a checkpoint of the last step), the run's record,
    evaluation when the recipe asks for it, and the end record."""
    ctx, run, progress, reporter, resolved = s.ctx, s.run, s.progress, s.reporter, s.resolved
    final_dir = None
    if status != Outcome.STOPPED:
        run.require()
        pckpt.save_final(ctx, s.model, s.tokenizer, run.path / ".final-tmp", run.final)
        final_dir = run.final
    elif progress.step > s.saved_step:
        s.save()
    best_checkpoint = str(run.checkpoints / ckpt.checkpoint_name(progress.best_step)) \
        if progress.best_step is not None else None
    run.update_info(status=status.run_status, steps=progress.step,
                    best_step=progress.best_step, best_validation_loss=progress.best_loss,
                    best_checkpoint=best_checkpoint, tokens_seen=progress.tokens_seen,
                    early_stopped=status == Outcome.STOPPED_EARLY, finished=time.time())
    if final_dir is not None and resolved.evaluation.enabled and ctx.is_main:
        # Before "end", so the report joins the registered model; rank 0 alone, like every write.
        from tunesmith.evaluate.runner import evaluate_after_training

        evaluate_after_training(run.path, reporter.report, str(s.device),  # no reload where it is the same
                                model=None if s.ctx.enabled else s.model, tokenizer=s.tokenizer)
    reporter.report({"type": "end", "step": progress.step, "status": str(status),
                     "final_dir": str(final_dir) if final_dir else None})
    reporter.close()
    return TrainResult(run.path, status, progress.step, final_dir, progress.best_step, progress.best_loss)


def _train_step(parallel: dist.Parallel, optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
                max_grad_norm: float | None, micro_examples: list[tuple[list[Any], bool]],
                device: torch.device, precision: Precision | None = None) -> dict[str, float]:
    """One optimizer step over its micro-batches; the loss is normalised by the units of the
    whole step (on all ranks), so accumulation over any split gives the same gradient. A filler
    micro-batch (real=False) only keeps ranks in step and adds nothing. Forward passes run under
    the precision's autocast (full fine-tuning in bf16), backward passes outside it, as autocast
    wants."""
    autocast = (precision or Precision(torch.float32)).autocast
    objective, ctx = parallel.objective, parallel.ctx
    batches = [(objective.collate(examples), real) for examples, real in micro_examples]
    units = dist.sum_metrics(ctx, {"units": float(sum(objective.units(b) for b, real in batches if real))})
    if units["units"] == 0:
        raise ModelError("a training step holds no trained tokens")
    totals: dict[str, float] = {"real_tokens": 0.0, "micro_batches": 0.0}
    for index, (batch, real) in enumerate(batches):
        batch = batch.to(device)
        # DDP and FSDP2 average gradients over ranks: world_size / units sums them instead.
        with parallel.no_sync(index < len(batches) - 1):
            with autocast(device):
                loss_sum, metrics = parallel(batch)
            (loss_sum * (ctx.world_size if real else 0) / units["units"]).backward()
        totals["real_tokens"] += batch.num_tokens if real else 0
        totals["micro_batches"] += real
        for key, value in metrics.items():
            totals[key] = totals.get(key, 0.0) + (value if real else 0.0)
    totals = dist.sum_metrics(ctx, totals)
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    grad_norm = dist.grad_norm_value(norm)
    if math.isfinite(grad_norm) and math.isfinite(totals.get("loss", 0.0)):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    summary = objective.summarise(totals)
    summary["trained_tokens"] = summary.pop("tokens", 0.0)
    return {**summary, "grad_norm": grad_norm, "real_tokens": totals["real_tokens"],
            "micro_batches": totals["micro_batches"]}
