"""Evaluate a tuned model: held-out loss, graded replies against the baselines, a
forgetting probe and per-example analysis, written as report.json and report.html.

    tuned      the tuned model, asked the held-out prompt as is
    base       the base model, zero-shot
    fewshot    the base model with k training examples (one seeded draw) before the prompt
    retrieval  the base model with the k training examples most like the question (BM25)

Every system answers the same items; losses are measured on the same reference tokens
(demonstrations in the prompt are context, never scored), so the numbers compare.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.records import ChatRecord, Message, Record
from tunesmith.errors import DataError, TunesmithError
from tunesmith.evaluate.examples import Item, ShotPicker, load_items, resolve_data, with_shots
from tunesmith.evaluate.forgetting import forgetting_probe
from tunesmith.evaluate.graders import Grader, build_graders, default_graders, default_tool_graders
from tunesmith.evaluate.models import (
    Models,
    Target,
    example_losses,
    loss_summary,
    max_positions,
    per_token,
    render_example,
    target_of,
)
from tunesmith.evaluate.report import summarise, write_report
from tunesmith.evaluate.stats import compare, mean_interval, resamples
from tunesmith.recipe import EvaluationConfig

REPORT_VERSION = 1
SYSTEMS = ("tuned", "base", "fewshot", "retrieval")
Progress = Callable[[str], None]


# --- the evaluation ---------------------------------------------------------------------------


class Evaluation:
    def __init__(self, target: Target, settings: EvaluationConfig, device: str = "cpu",
                 progress: Progress | None = None, tuned: Any = None):
        self.target, self.settings, self.device = target, settings, device
        self.tuned = tuned  # the model as it is in memory after training, instead of a reload
        self.say = progress or (lambda message: None)

    def run(self, heldout: str | Path | list[Record]) -> dict[str, Any]:
        """Evaluate on a held-out file, or on records (the run's own validation split)."""
        from tunesmith.data.render import Renderer

        settings, started = self.settings, time.time()
        data = heldout if isinstance(heldout, list) else resolve_data(str(heldout))
        # Held-out records split from the training file are never shown as demonstrations.
        self._held_out = {str(r.source) for r in heldout} if isinstance(heldout, list) else set()
        items = load_items(data, self.target.data_format, settings.max_examples, settings.bootstrap_seed)
        if self.tuned is None:
            self.say(f"loading {self.target.model}")
        self.models = models = Models(self.target, self.device, self.tuned)
        renderer = Renderer(models.tuned.tokenizer, self.target.loss_on)
        baselines = [b for b in SYSTEMS[1:] if b in settings.baselines]
        train_records = self._train_records()
        picker = ShotPicker(train_records, settings.bootstrap_seed) if train_records else None
        notes = []
        if (picker is None or not picker.shots) and set(baselines) - {"base"}:
            notes.append("few-shot and retrieval baselines skipped: no chat training examples "
                         "(give the training file with --train)")
            baselines = [b for b in baselines if b == "base"]
        systems = ["tuned", *baselines]
        graders, applies = self._graders(items)
        generating = [i for i in items if i.prompt is not None and any(a(i) for a in applies)]
        limit = min(self.target.max_length, max_positions(models.tuned, self.target.max_length))
        shots = {s: [self._shots(s, i, picker, renderer, limit) for i in items] for s in systems}
        notes += self._cut_shots(systems, items, shots, picker, limit)

        indices = resamples(len(items), settings.bootstrap_samples, settings.bootstrap_seed)
        losses: dict[str, list[dict[str, float]]] = {}
        replies: dict[str, list[str | None]] = {}
        grades: dict[str, dict[str, list[float]]] = {g.name: {} for g in graders}
        errors: dict[str, dict[str, list[str | None]]] = {g.name: {} for g in graders}
        wanted = {id(i) for i in generating}
        positions = [n for n, i in enumerate(items) if id(i) in wanted]
        prompts = {system: [with_shots(items[n].prompt or [], shots[system][n]) for n in positions]
                   for system in systems}
        tools = [items[n].tools for n in positions]
        together = models.mixed_adapter() if generating else None
        try:
            for system in systems:
                with models.use(system) as loaded:
                    self.say(f"{system}: held-out loss on {len(items)} examples")
                    examples = [render_example(renderer, self._with_context(i, shots[system][n]),
                                               self.target.max_length) if i.has_loss else None
                                for n, i in enumerate(items)]
                    losses[system] = example_losses(loaded, examples, self.target.chunk_tokens, self.device)
                    replies[system] = [None] * len(items)
                    if generating and together is None:
                        self.say(f"{system}: generating {len(generating)} replies")
                        texts = self._generate(loaded, prompts[system], tools)
                        for n, text in zip(positions, texts, strict=True):
                            replies[system][n] = text
            if together is not None:
                # One batch for every system: the adapter on for the tuned rows, off for the rest.
                self.say(f"generating {len(generating)} replies each, {', '.join(systems)} together")
                every = [p for system in systems for p in prompts[system]]
                adapters = [together if s == "tuned" else None for s in systems for _ in positions]
                texts = self._generate(models.tuned, every, tools * len(systems), adapters,
                                       [k for k in range(len(systems)) for _ in positions])
                for k, system in enumerate(systems):
                    for n, text in zip(positions, texts[k * len(positions) : (k + 1) * len(positions)],
                                       strict=True):
                        replies[system][n] = text
            for system in systems:
                for grader, applies_to in zip(graders, applies, strict=True):
                    # Aligned with items; None where the grader does not apply or nothing was generated.
                    scores: list[float | None] = [None] * len(items)
                    problems: list[str | None] = [None] * len(items)
                    for n, item in enumerate(items):
                        text = replies[system][n]
                        if text is None or not applies_to(item):
                            continue
                        result = grader.grade(text, item.grader_item)
                        scores[n], problems[n] = result.score, result.error
                    grades[grader.name][system] = scores
                    errors[grader.name][system] = problems
        finally:  # python graders hold a child process each
            for grader in graders:
                grader.close()

        report = self._report(items, systems, losses, replies, grades, errors, indices)
        report["notes"] = notes
        if settings.forgetting:
            report["forgetting"] = forgetting_probe(models, self.target, settings, settings.forgetting,
                                                    self._generate, self.say)
        report["noisy_training_examples"] = self._noisy_training(train_records, renderer)
        report["summary"] = summarise(report)
        report["elapsed_seconds"] = round(time.time() - started, 2)
        return report

    # --- pieces ---------------------------------------------------------------------------

    def _train_records(self) -> list[Record]:
        path = self.target.train_data
        if not path or not Path(path).exists():
            return []
        held_out = getattr(self, "_held_out", set())
        records = load_dataset_records(path, self.target.data_format)
        return [r for r in records if str(r.source) not in held_out]

    def _graders(self, items: list[Item]) -> tuple[list[Grader], list[Callable[[Item], bool]]]:
        """The graders and, for each, which items it grades. The recipe's graders grade every
        item with a prompt; by default replies with a reference text get the text graders and
        tool-call replies the tool-call graders, and an item with neither is left ungraded
        (counted in the report), never graded against an empty reference."""
        configs = self.settings.graders
        if configs is not None:
            from tunesmith.train.objectives.reward_model import load_reward_scorer

            graders = build_graders(configs, load_reward=load_reward_scorer)
            return graders, [_has_prompt] * len(graders)
        chosen: list[tuple[dict[str, Any], Callable[[Item], bool]]] = []
        if any(i.has_reference_text for i in items):
            chosen += [(c, _has_reference_text) for c in default_graders()]
        if any(i.has_reference_calls for i in items):
            chosen += [(c, _has_reference_calls) for c in default_tool_graders()]
        return build_graders([c for c, _ in chosen]), [a for _, a in chosen]

    def _shots(self, system: str, item: Item, picker: ShotPicker | None, renderer: Any,
               limit: int) -> list[list[Message]]:
        if picker is None or item.prompt is None or system in ("tuned", "base"):
            return []
        k = self.settings.few_shot_k if system == "fewshot" else self.settings.retrieval_k
        shots = picker.fewshot(k) if system == "fewshot" else picker.retrieved(item.question(), k)
        budget = limit - self.settings.max_new_tokens

        def too_long(shots: list[list[Message]]) -> bool:
            if len(renderer.prompt_ids(with_shots(item.prompt or [], shots))) > budget:
                return True
            # the scored reply must fit whole, or the loss would be measured on fewer tokens
            full = render_example(renderer, self._with_context(item, shots), 10**9) if item.has_loss else None
            return full is not None and len(full) > self.target.max_length

        while shots and too_long(shots):
            shots = shots[1:]  # the least similar (or the first drawn) goes first
        return shots

    def _cut_shots(self, systems: list[str], items: list[Item], shots: dict[str, list[list[list[Message]]]],
                   picker: ShotPicker | None, limit: int) -> list[str]:
        """A note per baseline whose prompts lost examples to fit the length limit: a baseline
        shown fewer examples than asked is weaker, and the report says so."""
        notes = []
        for system, k in (("fewshot", self.settings.few_shot_k), ("retrieval", self.settings.retrieval_k)):
            if system not in systems or picker is None:
                continue
            wanted = min(k, len(picker.shots))
            cut = sum(1 for n, item in enumerate(items)
                      if item.prompt is not None and len(shots[system][n]) < wanted)
            if cut:
                notes.append(f"{system}: {cut} of {len(items)} prompts hold fewer than {wanted} examples, to "
                             f"fit {limit} tokens (data.max_length) with the reply; raise data.max_length "
                             f"to show every example")
        return notes

    @staticmethod
    def _with_context(item: Item, shots: list[list[Message]]) -> Record:
        """The item's record with demonstrations before it, their replies not scored."""
        if not shots or not isinstance(item.record, ChatRecord):
            return item.record
        quiet = [{**m, "weight": 0} if m["role"] == "assistant" else m for shot in shots for m in shot]
        messages = item.record.messages
        lead = 0
        while lead < len(messages) and messages[lead]["role"] in ("system", "developer"):
            lead += 1
        return ChatRecord([*messages[:lead], *quiet, *messages[lead:]], item.record.source, item.record.tools)

    def _generate(self, loaded: Any, prompts: list[list[Message]], tools: list[Any] | None = None,
                  adapters: list[str | None] | None = None, groups: list[int] | None = None) -> list[str]:
        """Greedy (or sampled) replies through the one generation engine, each prompt given
        its item's tools as training renders them (and its adapter and prefill group, when
        several systems generate in one batch)."""
        from tunesmith.model.generation import Sampling, generate

        s = self.settings
        sampling = Sampling(max_new_tokens=s.max_new_tokens, temperature=s.temperature, stop=tuple(s.stop),
                            seed=s.bootstrap_seed)
        done = generate(loaded, prompts, sampling, tools=tools, adapters=adapters, groups=groups)
        return [group[0].result().strip() for group in done]

    def _report(self, items: list[Item], systems: list[str], losses: dict[str, list[dict[str, float]]],
                replies: dict[str, list[str | None]], grades: dict[str, dict[str, list[float]]],
                errors: dict[str, dict[str, list[str | None]]], indices: np.ndarray) -> dict[str, Any]:
        s = self.settings
        with_loss = [n for n, i in enumerate(items)
                     if i.has_loss and all(losses[system][n]["tokens"] > 0 for system in systems)]
        loss_idx = resamples(len(with_loss), s.bootstrap_samples, s.bootstrap_seed) if with_loss else indices
        loss = {system: loss_summary([losses[system][n] for n in with_loss], loss_idx, s.confidence)
                for system in systems} if with_loss else {}
        # Each grader is summarised over the items it graded for every system.
        graded_at = {name: [n for n in range(len(items))
                            if all(by[system][n] is not None for system in systems)]
                     for name, by in grades.items()}
        values = {name: {system: [float(by[system][n]) for n in graded_at[name]]  # type: ignore[arg-type]
                         for system in systems} for name, by in grades.items()}
        grade_idx = {name: resamples(len(at), s.bootstrap_samples, s.bootstrap_seed)
                     for name, at in graded_at.items() if at}
        scores = {name: {system: {**mean_interval(values[name][system], grade_idx[name],
                                                  s.confidence).to_dict(),
                                  "items": len(graded_at[name]),
                                  "errors": sum(errors[name][system][n] is not None for n in graded_at[name])}
                         for system in systems}
                  for name in grades if graded_at[name]}
        graded = sorted({n for at in graded_at.values() for n in at})
        ungraded = [items[n].source for n in range(len(items)) if n not in set(graded)]
        comparisons = []
        for baseline in systems[1:]:
            if with_loss and loss.get(baseline):
                per_tuned = [per_token(losses["tuned"][n]) for n in with_loss]
                per_base = [per_token(losses[baseline][n]) for n in with_loss]
                comparisons.append(compare(baseline, "loss", per_tuned, per_base, loss_idx,
                                           higher_is_better=False, confidence=s.confidence).to_dict())
            for name in scores:
                comparisons.append(compare(baseline, name, values[name]["tuned"], values[name][baseline],
                                           grade_idx[name], confidence=s.confidence).to_dict())
        return {
            "version": REPORT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": self.target.model, "base_model": self.target.base_model,
            "run_dir": str(self.target.run_dir) if self.target.run_dir else None,
            "train_data": self.target.train_data, "examples": len(items), "systems": systems,
            "settings": s.model_dump(mode="json"), "loss": loss, "scores": scores,
            "graded_items": len(graded), "ungraded_items": len(ungraded), "ungraded_sources": ungraded[:20],
            "comparisons": comparisons,
            "examples_detail": self._details(items, systems, losses, replies, grades, errors),
        }

    def _details(self, items: list[Item], systems: list[str], losses: dict[str, list[dict[str, float]]],
                 replies: dict[str, list[str | None]], grades: dict[str, dict[str, list[float]]],
                 errors: dict[str, dict[str, list[str | None]]]) -> dict[str, Any]:
        """Every item's numbers, and the worst held-out items by loss and by grade."""
        rows = []
        for n, item in enumerate(items):
            row: dict[str, Any] = {"index": item.index, "source": item.source,
                                   "question": item.question()[:500],
                                   "reference": (item.reference or "")[:1000]}
            row["loss"] = {s: per_token(losses[s][n]) for s in systems if item.has_loss}
            row["reply"] = {s: replies[s][n] for s in systems if replies[s][n] is not None}
            graded = {g: {s: by[s][n] for s in systems} for g, by in grades.items()
                      if all(by[s][n] is not None for s in systems)}
            if graded:
                row["scores"] = graded
                row["errors"] = {g: e["tuned"][n] for g, e in errors.items() if g in graded and e["tuned"][n]}
            rows.append(row)
        count = self.settings.worst_examples
        by_loss = sorted((r for r in rows if r["loss"].get("tuned") is not None
                          and math.isfinite(r["loss"]["tuned"])), key=lambda r: -r["loss"]["tuned"])
        by_grade = sorted((r for r in rows if r.get("scores")),
                          key=lambda r: sum(v["tuned"] for v in r["scores"].values()) / len(r["scores"]))
        return {"items": rows, "worst_by_loss": [r["index"] for r in by_loss[:count]],
                "worst_by_grade": [r["index"] for r in by_grade[:count]]}

    def _noisy_training(self, records: list[Record], renderer: Any) -> list[dict[str, Any]]:
        """The training examples the tuned model still fits worst: often mislabelled ones."""
        if not records or self.settings.max_train_examples is None:
            return []
        import random

        chosen = list(range(len(records)))
        if len(chosen) > self.settings.max_train_examples:
            chosen = sorted(random.Random(self.settings.bootstrap_seed).sample(
                chosen, self.settings.max_train_examples))
        examples = [render_example(renderer, records[i], self.target.max_length) for i in chosen]
        self.say(f"scoring {len(chosen)} training examples")
        rows = example_losses(self.models.tuned, examples, self.target.chunk_tokens, self.device)
        ranked = sorted((k for k in range(len(chosen)) if rows[k]["tokens"] > 0),
                        key=lambda k: -per_token(rows[k]))
        out = []
        for k in ranked[: self.settings.worst_examples]:
            record = records[chosen[k]]
            item = _safe_item(chosen[k], record)
            out.append({"source": str(record.source), "loss": per_token(rows[k]),
                        "question": item.question()[:500] if item else "",
                        "reference": (item.reference or "")[:1000] if item else ""})
        return out


def _has_prompt(item: Item) -> bool:
    return item.prompt is not None


def _has_reference_text(item: Item) -> bool:
    return item.has_reference_text


def _has_reference_calls(item: Item) -> bool:
    return item.has_reference_calls


def _safe_item(index: int, record: Record) -> Item | None:
    from tunesmith.evaluate.examples import to_item

    try:
        return to_item(index, record)
    except TunesmithError:
        return None


def load_dataset_records(path: str, fmt: str) -> list[Record]:
    from tunesmith.data.load import load_dataset

    return load_dataset(path, fmt).records


def validation_split(run_dir: Path) -> list[Record]:
    """The held-out records of a run trained without data.validation: its automatic split,
    found again with the tokenizer (and chat template) saved in final/."""
    from tunesmith.model.loading import ModelRef, load_tokenizer, resolve_model
    from tunesmith.train.data import validation_split_records
    from tunesmith.train.objectives import make_objective
    from tunesmith.train.run import RunDir

    run = RunDir(run_dir)
    recipe = run.read_recipe()
    if (run.final / "tokenizer_config.json").exists():
        tokenizer = load_tokenizer(ModelRef(str(run.final), str(run.final)), recipe.trust_remote_code)
    else:
        from tunesmith.data.templates import apply_chat_template_choice

        ref = resolve_model(recipe.base_model, recipe.revision)
        tokenizer = load_tokenizer(ref, recipe.trust_remote_code)
        apply_chat_template_choice(tokenizer, recipe.data.chat_template)
    objective = make_objective(recipe.method, recipe.training.loss_chunk_tokens, recipe)
    records = validation_split_records(recipe, tokenizer, objective.render_example)
    if not records:
        raise DataError("no held-out data to evaluate on: the run has no validation file and its "
                        "training data was too small to split (10 examples or more are split)",
                        where=str(run_dir), fix="pass --data HELDOUT.jsonl (or set evaluation.data)")
    return records


def evaluate_model(model: str | Path, heldout: str | Path | None, settings: EvaluationConfig, *,
                   train_data: str | None = None, base_model: str | None = None, out_dir: Path | None = None,
                   device: str = "cpu", progress: Progress | None = None,
                   tuned: Any = None) -> tuple[dict[str, Any], Path]:
    """Evaluate and write the report: into the run directory, or `out_dir`. With no held-out
    file, a run directory is evaluated on its own automatic validation split. `tuned` (a
    LoadedModel) is the tuned model already in memory, used instead of loading `model`."""
    target = target_of(model, train_data, base_model)
    if heldout is None:
        if target.run_dir is None:
            raise DataError("no held-out data to evaluate on", fix="pass --data HELDOUT.jsonl")
        records = validation_split(target.run_dir)
        report = Evaluation(target, settings, device, progress, tuned).run(records)
        report["data"] = f"the run's validation split ({len(records)} examples of {target.train_data})"
    else:
        report = Evaluation(target, settings, device, progress, tuned).run(heldout)
        report["data"] = str(heldout)
    folder = out_dir or target.run_dir
    if folder is None:
        raise TunesmithError("no folder to write the report into", fix="pass an output folder (--out)")
    metrics = []
    if target.run_dir is not None:
        from tunesmith.train.run import RunDir

        metrics = RunDir(target.run_dir).metrics()
    return report, write_report(report, folder, metrics)


def trained_in_memory(model: Any, tokenizer: Any, run_dir: Path) -> Any:
    """The single-process model the loop just trained and saved, ready to evaluate as a reload
    of its final/ folder would be, or None where it would not be the same: a base loaded in
    another dtype than the fp32 a reload gives, or a reward model's scalar head."""
    import torch

    from tunesmith.data.render import Renderer
    from tunesmith.model.adapters import is_score_model
    from tunesmith.model.inference import LoadedModel
    from tunesmith.train.loss import causal_lm

    if is_score_model(causal_lm(model)) or any(p.dtype != torch.float32 for p in model.parameters()):
        return None
    model.eval()
    model.config.use_cache = True  # training turned the KV cache off; generation wants it
    return LoadedModel(model, tokenizer, Renderer(tokenizer), str(run_dir))


def evaluate_after_training(run_dir: Path, report: Callable[[dict[str, Any]], None], device: str,
                            model: Any = None, tokenizer: Any = None) -> None:
    """The hook at the end of a successful run whose recipe asks for evaluation. A failure
    is reported as a warning event: the trained model is kept and `tunesmith eval` can retry.
    `model` and `tokenizer`, the ones just trained and saved to final/, spare a reload from
    disk where that gives the same model (trained_in_memory)."""
    from tunesmith.train.run import RunDir

    recipe = RunDir(run_dir).read_recipe()
    heldout = recipe.evaluation.data or recipe.data.validation  # else the run's own split
    try:
        tuned = trained_in_memory(model, tokenizer, run_dir) if model is not None else None
        result, path = evaluate_model(run_dir, heldout, recipe.evaluation, device=device, tuned=tuned)
    except Exception as exc:  # any failure here must not lose a finished training
        report({"type": "event", "level": "warning", "message": f"evaluation failed: {exc}"})
        return
    report({"type": "evaluation", "report": str(path), **result["summary"]})


