#!/usr/bin/env python
"""GRPO throughput: tunesmith (method grpo) against TRL's GRPOTrainer + PEFT LoRA, same model,
prompts, reward and settings.

The same design as sft_throughput.py and dpo_throughput.py (the machinery is _common.py): each
trainer in its own fresh subprocess, both loaded side by side, then one optimizer step each in
turn. Every step samples `--group-size` completions of each of `--prompts` prompts (at most
`--max-new-tokens` tokens, temperature 1), grades them with the same deterministic reward (1 if
the reply mentions "days", case-insensitive, else 0: tunesmith's `string_check` grader with
`ilike`, the same test written as a TRL reward function), and takes one policy-gradient step on
the group-relative advantages (no KL term, samples used once). Both see the same prompts in the
same order; the samples themselves differ (each tool draws from its own random stream).

    .venv/bin/python bench/grpo_throughput.py                          # SmolLM2-135M-Instruct
    .venv/bin/python bench/grpo_throughput.py --model tiny --steps 3   # smoke run (~1 min)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DATA_ROOT,
    RESULTS,
    TRL_OPTIM,
    Baton,
    TrlSteps,
    TunesmithSteps,
    add_worker_arguments,
    allocator_words,
    alternate,
    cpu_description,
    load_average,
    load_tokenizer,
    load_trl_model,
    pick_dtype,
    resolve_model_arg,
    step_ratios,
    table,
    versions,
    write_results,
)

PROMPTS = DATA_ROOT / "support_preference" / "train.jsonl"
MUST_MENTION = "days"
GRADER = ('[{type: string_check, name: mentions, operation: ilike, input: "{{sample.output_text}}", '
          'reference: "{{item.must_mention}}"}]')


def write_prompts(workdir: Path) -> Path:
    """The support questions as reinforcement rows: {messages, must_mention}."""
    rows = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    path = workdir / "prompts.jsonl"
    path.write_text("".join(
        json.dumps({"messages": r["input"]["messages"], "must_mention": MUST_MENTION}) + "\n" for r in rows))
    return path


def tunesmith_overrides(cfg: dict[str, Any], run_dir: Path) -> list[str]:
    steps = cfg["steps"]
    # One micro-batch holds the whole step (every prompt's group is sampled as one batch):
    # footprint per prompt = group_size * (prompt + max_new_tokens).
    budget = cfg["prompts"] * cfg["group_size"] * (cfg["max_prompt"] + cfg["max_new_tokens"])
    return [
        f"base_model={cfg['base_model']}", "method=grpo",
        f"data.train={cfg['prompts_file']}", "data.validation_split=0",
        f"data.max_length={cfg['max_prompt']}",
        "adapter.kind=lora", f"adapter.rank={cfg['rank']}", f"adapter.alpha={cfg['alpha']}",
        "adapter.dropout=0.0", "adapter.target_modules=all-linear",
        f"reinforcement.graders={GRADER}", f"reinforcement.group_size={cfg['group_size']}",
        f"reinforcement.max_new_tokens={cfg['max_new_tokens']}", "reinforcement.kl_coef=0",
        "reinforcement.clip_epsilon=0.2", "reinforcement.temperature=1.0", "reinforcement.top_p=1.0",
        "training.epochs=1", f"training.max_steps={steps}", f"training.batch_size={cfg['prompts']}",
        f"training.micro_batch_tokens={budget}",
        f"training.learning_rate={cfg['lr']}", "training.schedule=constant", "training.warmup_ratio=0",
        "training.weight_decay=0.0", "training.max_grad_norm=1.0",
        f"training.seed={cfg['seed']}", f"training.dtype={cfg['dtype']}", "training.device=cpu",
        "training.gradient_checkpointing=false",
        f"training.eval_every={steps + 1000}", f"training.save_every={steps + 1000}",
        "training.keep_checkpoints=1", f"output.dir={run_dir.parent}", f"output.name={run_dir.name}",
    ]


def training_order(cfg: dict[str, Any]) -> dict[str, Any]:
    """tunesmith's step plan (the prompt order TRL is fed) and its rendered prompt ids."""
    from tunesmith.data.pack import plan_epoch
    from tunesmith.model.loading import load_tokenizer as ts_load_tokenizer
    from tunesmith.model.loading import resolve_model
    from tunesmith.recipe import load_recipe
    from tunesmith.train.data import prepare_data
    from tunesmith.train.objectives import make_objective

    recipe = load_recipe(None, tunesmith_overrides(cfg, Path(tempfile.gettempdir()) / "unused"))
    tokenizer = ts_load_tokenizer(resolve_model(recipe.base_model))
    objective = make_objective("grpo", 1024, recipe)
    data = prepare_data(recipe, tokenizer, recipe.data.max_length, objective.render_example)
    if data.dropped or len(data.train) != len(PROMPTS.read_text().splitlines()):
        sys.exit("some prompts were dropped: raise --max-prompt")
    budget = int(recipe.training.micro_batch_tokens)
    plan = plan_epoch([len(e) for e in data.train], cfg["prompts"], budget, cfg["seed"], 0)
    if cfg["steps"] > len(plan):
        sys.exit(f"--steps {cfg['steps']} is more than one epoch ({len(plan)} steps)")
    if any(len(step) != 1 for step in plan[: cfg["steps"]]):
        sys.exit("a step did not fit one micro-batch; the tools would not sample alike")
    order = [i for step in plan[: cfg["steps"]] for micro in step for i in micro]
    return {"order": order, "prompt_ids": [data.train[i].prompt_ids for i in order]}


def worker_tunesmith(cfg: dict[str, Any], baton: Baton) -> dict[str, Any]:
    import tunesmith.train.loop as loop
    from tunesmith.recipe import load_recipe

    run_dir = Path(cfg["workdir"]) / f"tunesmith-{cfg['tag']}"
    recipe = load_recipe(None, tunesmith_overrides(cfg, run_dir))
    recorder = TunesmithSteps(baton, fields=("reward", "completions", "completion_length"))
    recorder.install()
    result = loop.train(recipe, reporters=[recorder])
    recorder.add_step_times(run_dir)
    for step in recorder.steps:  # the objective reports the mean length per completion
        step["completion_tokens"] = step["completion_length"] * step["completions"]
    return recorder.result(result.final_dir)


def mentions(completions: list[Any], **kwargs: Any) -> list[float]:
    """TRL's reward function: tunesmith's ilike grader, 1 if the reply contains MUST_MENTION."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(MUST_MENTION in text.lower()) for text in texts]


def worker_trl(cfg: dict[str, Any], baton: Baton) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = load_tokenizer(cfg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = [json.loads(line) for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = [rows[i]["input"]["messages"] for i in cfg["order"]]
    same_prompts = all(
        tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False) == ids
        for p, ids in zip(prompts, cfg["prompt_ids"], strict=True))
    model = load_trl_model(cfg)
    completions = cfg["prompts"] * cfg["group_size"]
    args = GRPOConfig(
        output_dir=str(Path(cfg["workdir"]) / f"trl-{cfg['tag']}"),
        max_steps=cfg["steps"], num_train_epochs=1,
        # TRL counts completions per device batch: every prompt's group in one generation batch
        per_device_train_batch_size=completions, gradient_accumulation_steps=1,
        num_generations=cfg["group_size"], max_completion_length=cfg["max_new_tokens"],
        temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
        beta=0.0, epsilon=0.2, num_iterations=1, loss_type="grpo", scale_rewards="group",
        learning_rate=cfg["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim=TRL_OPTIM, seed=cfg["seed"], data_seed=cfg["seed"],
        bf16=cfg["trl_bf16"], fp16=False, use_cpu=True, gradient_checkpointing=False,
        shuffle_dataset=False, eval_strategy="no", save_strategy="no", logging_steps=1,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, log_completions=False,
    )
    lora = LoraConfig(r=cfg["rank"], lora_alpha=cfg["alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    steps = TrlSteps(baton)
    dataset = Dataset.from_list([{"prompt": p} for p in prompts])
    trainer = GRPOTrainer(model=model, reward_funcs=mentions, args=args, train_dataset=dataset,
                          processing_class=tokenizer, peft_config=lora, callbacks=[steps.callback()])
    steps.start(trainer.model)
    trainer.train()
    steps.add_log(trainer.state.log_history, {"loss": "loss", "reward": "reward",
                                              "completion_length": "completions/mean_length"})
    for step in steps.steps:
        step["completions"] = completions
        step["completion_tokens"] = step["completion_length"] * completions
    adapter = Path(cfg["workdir"]) / f"trl-{cfg['tag']}" / "final"
    trainer.model.save_pretrained(adapter)
    return {**steps.result(adapter), "same_prompt_ids": same_prompts}


def worker_main(kind: str, config_path: Path, result_path: Path, sync: str | None) -> None:
    cfg = json.loads(config_path.read_text())
    baton = Baton(sync)
    result = worker_tunesmith(cfg, baton) if kind == "tunesmith" else worker_trl(cfg, baton)
    result_path.write_text(json.dumps(result))


def report(cfg: dict[str, Any], pair: dict[str, dict[str, Any]], command: str, started: float,
           load: tuple[str, str]) -> str:
    rows = {}
    for tool, run in (("tunesmith", pair["tunesmith"]), ("TRL", pair["trl"])):
        timed = run["steps"][1:]  # step 1 is warm-up
        seconds = sum(s["seconds"] for s in timed)
        completions = sum(s["completions"] for s in timed)
        generated = sum(s["completion_tokens"] for s in timed)
        rows[tool] = {"completions_per_s": completions / seconds, "tokens_per_s": generated / seconds,
                      "seconds": seconds, "generated": generated, "mean_length": generated / completions,
                      "trained": sum(s["tokens"] for s in timed), "peak": run["peak_rss_mib"],
                      "baseline": run["baseline_rss_mib"],
                      "reward": [round(s["reward"], 3) for s in run["steps"]]}
    ts, trl = rows["tunesmith"], rows["TRL"]
    body = [[tool, f"{row['completions_per_s']:.3f}", f"{row['tokens_per_s']:.1f}",
             f"{row['mean_length']:.1f}", f"{row['peak']:.0f}", f"{row['baseline']:.0f}",
             f"{row['peak'] - row['baseline']:.0f}"]
            for tool, row in rows.items()]
    body.append(["**tunesmith / TRL**", f"**{ts['completions_per_s'] / trl['completions_per_s']:.2f}x**",
                 f"{ts['tokens_per_s'] / trl['tokens_per_s']:.2f}x",
                 f"{ts['mean_length'] / trl['mean_length']:.2f}x",
                 f"**{ts['peak'] / trl['peak']:.2f}x**", f"{ts['baseline'] / trl['baseline']:.2f}x",
                 f"{(ts['peak'] - ts['baseline']) / (trl['peak'] - trl['baseline']):.2f}x"])
    steps_ts, steps_trl = pair["tunesmith"]["steps"], pair["trl"]["steps"]
    lines = [
        f"# GRPO throughput: tunesmith vs TRL GRPOTrainer ({dt.date.today().isoformat()})", "",
        *table(["tool", "completions/s", "completion tokens/s", "mean completion tokens", "peak RSS MiB",
                "model-loaded RSS MiB", "training overhead MiB"], body),
        "",
        "Target from the issue: >= 1.5x TRL's throughput.",
        "",
        f"- Model: {cfg['model_label']}; torch threads {pair['tunesmith']['threads']}; {cpu_description()}; "
        f"{versions()}; load average {load[0]} at the start, {load[1]} at the end.",
        f"- Both: {cfg['steps']} steps of {cfg['prompts']} prompts x {cfg['group_size']} completions "
        f"(the same prompts in the same order; same prompt ids: {pair['trl']['same_prompt_ids']}), at most "
        f"{cfg['max_new_tokens']} new tokens, temperature 1, top-p 1, no top-k; reward 1 if the reply "
        f"mentions \"{MUST_MENTION}\"; advantages (r - group mean) / group std; clipped surrogate eps 0.2, "
        "no KL term, each sample used for one step; loss = mean over completions of the mean over "
        f"their tokens (TRL loss_type=grpo); LoRA r={cfg['rank']} alpha={cfg['alpha']} on all linear layers, "
        f"AdamW lr {cfg['lr']} constant, grad-norm clip 1.0; tunesmith dtype {cfg['dtype']}, "
        f"TRL bf16={cfg['trl_bf16']} ({cfg['dtype_reason']}; base weights in {cfg['weights_dtype']} "
        "in both); no gradient checkpointing.",
        "- " + allocator_words(cfg, {"tunesmith": steps_ts, "TRL": steps_trl}),
        f"- completions/s and tokens/s over steps 2..{cfg['steps']} (sampling, grading, the loss, backward "
        f"and optimizer step; tunesmith {ts['seconds']:.1f} s, TRL {trl['seconds']:.1f} s); generated tokens "
        f"{ts['generated']:.0f} vs {trl['generated']:.0f}; tokens through the training forward "
        f"{ts['trained']} vs {trl['trained']}. Per-step time ratio TRL/tunesmith: "
        f"{step_ratios([(steps_ts, steps_trl)])}; per generated token: "
        f"{step_ratios([(steps_ts, steps_trl)], per='completion_tokens')}.",
        f"- Peak RSS: {pair['tunesmith']['peak_method']}, from model + adapter ready to the end of the last "
        "step.",
        f"- Mean reward per step: tunesmith {ts['reward']}, TRL {trl['reward']}. "
        f"Whole benchmark: {time.perf_counter() - started:.0f} s.",
        "", "Command:", "", "```", command, "```",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny, or a model folder / .gguf file")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=2, help="prompts per optimizer step")
    parser.add_argument("--group-size", type=int, default=8, help="completions per prompt (num_generations)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="max completion length")
    parser.add_argument("--max-prompt", type=int, default=256, help="longest prompt kept, in tokens")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="what both tools compute in (auto: bf16 where tunesmith's probe finds it "
                             "faster on this CPU, else fp32; TRL then gets bf16=True)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (runs, adapters, logs)")
    add_worker_arguments(parser, ["tunesmith", "trl"])
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.config, args.result, args.sync)
        return
    if args.steps < 2:
        parser.error("--steps must be at least 2 (step 1 is excluded as warm-up)")
    started, load_start = time.perf_counter(), load_average()
    command = shlex.join([".venv/bin/python", "bench/grpo_throughput.py", *sys.argv[1:]])
    model = resolve_model_arg(args.model)
    dtype, reason = pick_dtype(args.dtype, full=False)
    workdir = Path(tempfile.mkdtemp(prefix="tunesmith-grpo-bench-"))
    cfg = {"location": model["location"], "gguf_file": model["gguf_file"], "base_model": model["base_model"],
           "model_label": model["label"], "steps": args.steps, "prompts": args.prompts,
           "group_size": args.group_size, "max_new_tokens": args.max_new_tokens,
           "max_prompt": args.max_prompt,
           "seed": args.seed, "rank": 16, "alpha": 32, "lr": args.lr, "dtype": dtype,
           "trl_bf16": dtype == "bfloat16", "weights_dtype": dtype, "dtype_reason": reason,
           "workdir": str(workdir)}
    cfg["peer_allocator"] = args.peer_allocator
    print(f"model: {model['label']}\nwork folder: {workdir}\ndtype: {dtype} ({reason})", flush=True)
    try:
        cfg["prompts_file"] = str(write_prompts(workdir))
        cfg.update(training_order(cfg))
        pair = alternate(cfg, workdir, "r0", __file__)
        text = report(cfg, pair, command, started, (load_start, load_average()))
        print("\n" + text)
        output = args.output or RESULTS / f"grpo_throughput-{dt.date.today().isoformat()}.md"
        write_results(output, text, {"config": cfg, "runs": pair})
    finally:
        if args.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
