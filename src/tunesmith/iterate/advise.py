"""Before training: is this a problem fine-tuning solves?

The base model answers held-out examples three ways, through `tunesmith eval`'s own
Evaluation (the same graders, losses and seeded bootstrap intervals):

    zero_shot  the held-out prompt as is
    few_shot   k training examples (one seeded draw) before the prompt
    retrieval  the k training examples most like the question (BM25) before the prompt

Then it reads the differences, claiming only what the intervals support:

    - a prompting system already at the ceiling          -> nothing to gain from fine-tuning
    - retrieval really ahead of few-shot                 -> a knowledge problem: retrieval is the tool
    - errors left that examples in the prompt do not fix -> a behaviour problem: fine-tune
    - intervals that separate nothing                    -> not decided; more held-out examples

and what fine-tuning would cost here (iterate/probe.py: a few real training steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError
from tunesmith.evaluate.stats import compare, resamples
from tunesmith.recipe import Recipe

ADVICE_VERSION = 1
SYSTEMS = {"tuned": "zero_shot", "fewshot": "few_shot", "retrieval": "retrieval"}
"""Evaluation's system names -> advise's: with the base model as the evaluated model, the
evaluation's "tuned" system is the base model asked zero-shot."""
PAIRS = (("few_shot", "zero_shot"), ("retrieval", "zero_shot"), ("retrieval", "few_shot"))
CEILING = 0.95
"""A grader score (0..1) whose whole interval lies at or above this leaves no room to improve."""
RECOMMENDATIONS = ("retrieval", "fine_tune", "nothing_to_gain", "undecided")
Progress = Callable[[str], None]


def advise(recipe: Recipe, *, heldout: str | None = None, probe_steps: int = 3, ceiling: float = CEILING,
           device: str = "cpu", progress: Progress | None = None) -> dict[str, Any]:
    """Score the base model on held-out examples and probe the cost of fine-tuning `recipe`.

    `recipe.data.train` is the dataset; the held-out examples are `heldout`, else the
    recipe's own validation file, else the seeded split a training run of this recipe would
    hold out (so the advice is measured on the examples the trained model would be judged on).
    `recipe.evaluation` holds the evaluation settings (graders, k, max_examples, intervals)."""
    from tunesmith.evaluate.models import Target
    from tunesmith.evaluate.runner import Evaluation

    say = progress or (lambda message: None)
    if not recipe.data.train:
        raise DataError("advise needs a training file", where="data.train", fix="tunesmith advise DATA.jsonl")
    settings = recipe.evaluation.model_copy(update={"baselines": ["fewshot", "retrieval"], "forgetting": None,
                                                    "max_train_examples": None, "enabled": False})
    heldout = heldout or recipe.data.validation
    target = Target(recipe.base_model, recipe.base_model, train_data=recipe.data.train,
                    data_format=recipe.data.format, max_length=recipe.data.max_length,
                    loss_on=recipe.data.loss_on, chunk_tokens=recipe.training.loss_chunk_tokens)
    say("probing the cost of fine-tuning: a few training steps")
    cost = probe_cost_of(recipe, heldout, probe_steps)
    def relabel(message: str) -> None:  # the evaluation's "tuned" system is the base model, zero-shot
        name, sep, rest = message.partition(": ")
        say(f"{SYSTEMS.get(name, name)}: {rest}" if sep and name in SYSTEMS else message)

    evaluation = Evaluation(target, settings, device, relabel)
    if heldout:
        report = evaluation.run(heldout)
        heldout_label = str(heldout)
    else:
        records = split_records(recipe)
        report = evaluation.run(records)
        heldout_label = f"{len(records)} examples split from {recipe.data.train} (as training would)"
    if "fewshot" not in report["systems"]:
        raise DataError("few-shot and retrieval need chat examples to show the model; this data has none",
                        where=recipe.data.train, fix="advise compares prompting systems on chat data")
    measured = measurements(report)
    verdict = recommend(measured, ceiling)
    return {"version": ADVICE_VERSION, "base_model": recipe.base_model, "data": recipe.data.train,
            "heldout": heldout_label, "examples": report["examples"], "graded_items": report["graded_items"],
            "settings": {**settings.model_dump(mode="json"), "ceiling": ceiling}, **measured, **verdict,
            "cost": cost, "notes": report.get("notes", []), "elapsed_seconds": report["elapsed_seconds"]}


def probe_cost_of(recipe: Recipe, heldout: str | None, steps: int) -> dict[str, Any]:
    from tunesmith.iterate.probe import probe_cost

    probe = recipe.model_copy(deep=True)
    if heldout and not probe.data.validation:
        probe.data.validation = heldout  # then the probe trains on every example, as training would
    return probe_cost(probe, steps)


def split_records(recipe: Recipe) -> list[Any]:
    """The held-out records of the seeded split a run of `recipe` would make (train/data.py)."""
    from tunesmith.data.templates import apply_chat_template_choice
    from tunesmith.model.loading import load_tokenizer, resolve_model
    from tunesmith.train.data import validation_split_records

    tokenizer = load_tokenizer(resolve_model(recipe.base_model, recipe.revision), recipe.trust_remote_code)
    apply_chat_template_choice(tokenizer, recipe.data.chat_template)
    records = validation_split_records(recipe, tokenizer)
    if not records:
        raise DataError("no held-out examples: the data is too small to split (10 examples or more "
                        "are split) and no held-out file was given", where=recipe.data.train,
                        fix="pass --heldout HELDOUT.jsonl or give more examples")
    return records


# --- reading the evaluation ------------------------------------------------------------------


def measurements(report: dict[str, Any]) -> dict[str, Any]:
    """Each system's loss and grader scores with intervals, and the pairwise comparisons,
    bootstrapped over the same items with the evaluation's seed (evaluate/stats.py)."""
    s = report["settings"]
    systems = {SYSTEMS[name]: {"loss": (report.get("loss") or {}).get(name),
                               "scores": {g: by[name] for g, by in (report.get("scores") or {}).items()}}
               for name in report["systems"]}
    rows = report["examples_detail"]["items"]
    names = list(report["systems"])
    metrics: dict[str, tuple[list[dict[str, float]], bool]] = {}
    with_loss = [{SYSTEMS[n]: r["loss"][n] for n in names} for r in rows
                 if all(isinstance(r.get("loss", {}).get(n), float) and math.isfinite(r["loss"][n])
                        for n in names)]
    if with_loss:
        metrics["loss"] = (with_loss, False)
    for grader in report.get("scores") or {}:
        graded = [{SYSTEMS[n]: float(r["scores"][grader][n]) for n in names} for r in rows
                  if grader in (r.get("scores") or {})]
        if graded:
            metrics[grader] = (graded, True)
    comparisons = []
    for metric, (values, higher) in metrics.items():
        indices = resamples(len(values), s["bootstrap_samples"], s["bootstrap_seed"])
        for system, other in PAIRS:
            c = compare(other, metric, [v[system] for v in values], [v[other] for v in values], indices,
                        higher_is_better=higher, confidence=s["confidence"]).to_dict()
            comparisons.append({"system": system, "versus": other, "metric": metric, "items": len(values),
                                "wins": c["wins"], "ties": c["ties"], "losses": c["losses"],
                                "difference": c["difference"], "verdict": c["verdict"]})
    return {"systems": systems, "comparisons": comparisons}


def _find(comparisons: list[dict[str, Any]], system: str, versus: str) -> list[dict[str, Any]]:
    return [c for c in comparisons if c["system"] == system and c["versus"] == versus]


def _say(c: dict[str, Any]) -> str:
    d = c["difference"]
    return (f"{c['system']} vs {c['versus']} on {c['metric']}: {d['value']:+.3f} "
            f"({d['low']:+.3f} to {d['high']:+.3f}; + means {c['system']} is better), "
            f"{c['wins']}/{c['ties']}/{c['losses']} win/tie/loss over {c['items']} items: {c['verdict']}")


def recommend(measured: dict[str, Any], ceiling: float = CEILING) -> dict[str, Any]:
    """The recommendation, its reason in plain words and the comparisons it rests on."""
    systems, comparisons = measured["systems"], measured["comparisons"]
    graders = list(dict.fromkeys(g for s in systems.values() for g in s["scores"]))  # the report's order

    # 1. no headroom without retrieval: the model already does it zero-shot or with a few examples
    at_ceiling = _at_ceiling(systems, graders, ceiling)
    if at_ceiling is not None and at_ceiling[0] != "retrieval":
        return _nothing_to_gain(*at_ceiling, ceiling)

    # 2. knowledge: retrieval really ahead of few-shot, and behind on nothing
    versus_fewshot = _find(comparisons, "retrieval", "few_shot")
    ahead = [c for c in versus_fewshot if c["verdict"] == "better"]
    behind = [c for c in versus_fewshot if c["verdict"] == "worse"]
    if ahead and not behind:
        evidence = [_say(c) for c in versus_fewshot]
        reason = ("retrieved examples help where the same number of random examples do not: the answers "
                  "depend on facts in your examples that the model does not know. That is a knowledge "
                  "problem; retrieval (RAG) is the tool, and fine-tuning is an unreliable way to add facts")
        worse_than_none = [c for c in _find(comparisons, "retrieval", "zero_shot") if c["verdict"] == "worse"]
        if worse_than_none:  # said, never hidden: the model reads its prompt poorly
            evidence += [_say(c) for c in worse_than_none]
            reason += (". Yet this model does worse with retrieved examples than with none "
                       f"({', '.join(c['metric'] for c in worse_than_none)}): it reads its prompt poorly, "
                       "so pair retrieval with a model that uses its context")
        return {"recommendation": "retrieval", "reason": reason, "evidence": evidence}

    if at_ceiling is not None:  # retrieval at the ceiling, and not ahead of few-shot
        return _nothing_to_gain(*at_ceiling, ceiling)

    # 3. behaviour: graded errors remain with the best prompt, and retrieval does not fix them
    best = _best_prompted(systems, graders)
    if best is not None:
        name, grader, score = best
        if score["high"] < ceiling and not ahead:
            fewshot_gain = _find(comparisons, "few_shot", "zero_shot")
            evidence = [f"best prompted system: {name} {grader} {score['value']:.3f} ({score['low']:.3f}-"
                        f"{score['high']:.3f}), below {ceiling:g} with the whole interval",
                        *(_say(c) for c in versus_fewshot), *(_say(c) for c in fewshot_gain)]
            reason = (f"even the best prompt ({name.replace('_', ' ')}) leaves errors, and retrieving "
                      "similar examples does no better than random ones: what is missing is behaviour "
                      "(format, labels, voice) rather than knowledge, and behaviour is what fine-tuning "
                      "teaches. How much it gains is measured only by training and `tunesmith eval`")
            return {"recommendation": "fine_tune", "reason": reason, "evidence": evidence}

    evidence = [_say(c) for c in comparisons]
    if ahead and behind:
        why = (f"retrieval is ahead of few-shot on {', '.join(c['metric'] for c in ahead)} but behind on "
               f"{', '.join(c['metric'] for c in behind)}: the evidence is mixed")
    elif best is None:
        why = "no grader scored the replies"
    else:
        why = "the intervals do not separate the systems enough to tell"
    return {"recommendation": "undecided",
            "reason": f"{why}; more held-out examples (evaluation.max_examples, a larger held-out file) or "
                      "graders that check what matters (--graders) would narrow the intervals",
            "evidence": evidence}


def _at_ceiling(systems: dict[str, Any], graders: list[str],
                ceiling: float) -> tuple[str, list[str]] | None:
    """The first system whose whole interval is at or above the ceiling on every grader."""
    for name, system in systems.items():
        scores = [system["scores"].get(g) or {} for g in graders]
        if scores and all(v.get("low") is not None and v["low"] >= ceiling for v in scores):
            return name, [f"{name} {g}: {v['value']:.3f} ({v['low']:.3f}-{v['high']:.3f})"
                          for g, v in zip(graders, scores, strict=True)]
    return None


def _nothing_to_gain(name: str, evidence: list[str], ceiling: float) -> dict[str, Any]:
    return {"recommendation": "nothing_to_gain",
            "reason": f"the base model with {name.replace('_', ' ')} prompting already scores at the ceiling "
                      f"({ceiling:g} or more on every grader, whole interval): fine-tuning has little room "
                      "to improve on it",
            "evidence": evidence}


def _best_prompted(systems: dict[str, Any], graders: list[str]) -> tuple[str, str, dict[str, Any]] | None:
    """The prompting system with the highest score on the first grader."""
    if not graders:
        return None
    grader = graders[0]
    scored = [(name, s["scores"][grader]) for name, s in systems.items()
              if grader in s["scores"] and s["scores"][grader].get("value") is not None
              and math.isfinite(s["scores"][grader]["value"])]
    if not scored:
        return None
    name, score = max(scored, key=lambda pair: pair[1]["value"])
    return name, grader, score


def advice_recipe(data: str, model: str | None, overrides: list[str] | tuple[str, ...] = (),
                  recipe_file: str | Path | None = None) -> Recipe:
    """The recipe advise measures: a recipe file (or the defaults) with DATA as its training
    file, the model if given, and `--set` overrides (training.*, adapter.*, evaluation.*)."""
    from tunesmith.recipe import load_recipe

    sets = [f"data.train={Path(data).expanduser().resolve()}", *overrides]
    if model:
        sets.insert(0, f"base_model={model}")
    return load_recipe(recipe_file, sets)
