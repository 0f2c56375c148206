#!/usr/bin/env python
"""DPO throughput: tunesmith against TRL's DPOTrainer + PEFT LoRA, same model, pairs and settings.

The same design as sft_throughput.py (the process, memory and lock-step machinery is _common.py):
each trainer in its own fresh subprocess, both loaded side by side, then one optimizer step each
in turn, so a busy minute on a shared machine slows both alike. Both train on the same
preference pairs in the same order (tunesmith's step plan, TRL fed sequentially), with the
reference model being the base with the adapter switched off, computed every step (neither
tool precomputes by default). One evaluation function, tunesmith's own DPO evaluation, then
scores both adapters on the same held-out pairs.

    .venv/bin/python bench/dpo_throughput.py                          # SmolLM2-135M-Instruct
    .venv/bin/python bench/dpo_throughput.py --model tiny --steps 3   # smoke run (~30 s)
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
    Worker,
    add_worker_arguments,
    allocator_words,
    alternate,
    cpu_description,
    decoder_linear_params,
    load_tokenizer,
    load_trl_model,
    matmul_peak_gflops,
    mfu_line,
    pick_dtype,
    resolve_model_arg,
    step_ratios,
    table,
    versions,
    write_results,
)

DATA = DATA_ROOT / "support_preference"


def tunesmith_overrides(cfg: dict[str, Any], run_dir: Path) -> list[str]:
    steps = cfg["steps"]
    return [
        f"base_model={cfg['base_model']}", "method=dpo",
        f"data.train={DATA / 'train.jsonl'}", "data.validation_split=0",
        f"data.max_length={cfg['max_length']}",
        "adapter.kind=lora", f"adapter.rank={cfg['rank']}", f"adapter.alpha={cfg['alpha']}",
        "adapter.dropout=0.0", "adapter.target_modules=all-linear",
        "preference.loss=sigmoid", f"preference.beta={cfg['beta']}",
        "training.epochs=1", f"training.max_steps={steps}", f"training.batch_size={cfg['batch_size']}",
        f"training.micro_batch_tokens={cfg['batch_size'] * 2 * cfg['max_length']}",
        f"training.learning_rate={cfg['lr']}", "training.schedule=constant", "training.warmup_ratio=0",
        "training.weight_decay=0.0", "training.max_grad_norm=1.0",
        f"training.seed={cfg['seed']}", f"training.dtype={cfg['dtype']}", "training.device=cpu",
        "training.gradient_checkpointing=false",
        f"training.eval_every={steps + 1000}", f"training.save_every={steps + 1000}",
        "training.keep_checkpoints=1", f"output.dir={run_dir.parent}", f"output.name={run_dir.name}",
    ]


def read_pairs(path: Path) -> list[dict[str, Any]]:
    """The hosted API's preference rows as TRL's conversational {prompt, chosen, rejected}."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"prompt": row["input"]["messages"], "chosen": row["preferred_output"],
             "rejected": row["non_preferred_output"]} for row in rows]


def training_order(cfg: dict[str, Any]) -> list[int]:
    from tunesmith.data.pack import plan_epoch
    from tunesmith.model.loading import load_tokenizer, resolve_model
    from tunesmith.recipe import load_recipe
    from tunesmith.train.data import prepare_data
    from tunesmith.train.objectives import make_objective

    recipe = load_recipe(None, tunesmith_overrides(cfg, Path(tempfile.gettempdir()) / "unused"))
    tokenizer = load_tokenizer(resolve_model(recipe.base_model))
    objective = make_objective("dpo", 1024, recipe)
    data = prepare_data(recipe, tokenizer, recipe.data.max_length, objective.render_example)
    if data.dropped or data.truncated or len(data.train) != len(read_pairs(DATA / "train.jsonl")):
        sys.exit("some pairs were dropped or truncated: raise --max-length")
    plan = plan_epoch([len(e) for e in data.train], cfg["batch_size"],
                      cfg["batch_size"] * 2 * cfg["max_length"], cfg["seed"], 0)
    if cfg["steps"] > len(plan):
        sys.exit(f"--steps {cfg['steps']} is more than one epoch ({len(plan)} steps)")
    return [i for step in plan[: cfg["steps"]] for micro in step for i in micro]


def worker_tunesmith(cfg: dict[str, Any], baton: Baton) -> dict[str, Any]:
    import tunesmith.train.loop as loop
    from tunesmith.recipe import load_recipe

    run_dir = Path(cfg["workdir"]) / f"tunesmith-{cfg['tag']}"
    recipe = load_recipe(None, tunesmith_overrides(cfg, run_dir))
    recorder = TunesmithSteps(baton)
    recorder.install()
    result = loop.train(recipe, reporters=[recorder])
    recorder.add_step_times(run_dir)
    return recorder.result(result.final_dir)


def worker_trl(cfg: dict[str, Any], order: list[int], baton: Baton) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    tokenizer = load_tokenizer(cfg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    pairs = read_pairs(DATA / "train.jsonl")
    model = load_trl_model(cfg)
    args = DPOConfig(
        output_dir=str(Path(cfg["workdir"]) / f"trl-{cfg['tag']}"),
        max_steps=cfg["steps"], num_train_epochs=1,
        per_device_train_batch_size=cfg["batch_size"], gradient_accumulation_steps=1,
        learning_rate=cfg["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim=TRL_OPTIM, seed=cfg["seed"], data_seed=cfg["seed"],
        bf16=cfg["trl_bf16"], fp16=False, use_cpu=True, gradient_checkpointing=False,
        beta=cfg["beta"], loss_type=["sigmoid"], max_length=None,
        padding_free=cfg["trl_padding_free"], precompute_ref_log_probs=False,
        train_sampling_strategy="sequential", eval_strategy="no", save_strategy="no",
        logging_steps=1, report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    )
    lora = LoraConfig(r=cfg["rank"], lora_alpha=cfg["alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    steps = TrlSteps(baton)
    dataset = Dataset.from_list([pairs[i] for i in order])
    trainer = DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora, callbacks=[steps.callback()])
    steps.start(trainer.model)
    trainer.train()
    steps.add_log(trainer.state.log_history, {"loss": "loss"})
    adapter = Path(cfg["workdir"]) / f"trl-{cfg['tag']}" / "final"
    trainer.model.save_pretrained(adapter)
    return steps.result(adapter)


def worker_eval(cfg: dict[str, Any], adapters: list[str]) -> dict[str, Any]:
    """tunesmith's own DPO evaluation (loss, reward accuracy) of each adapter on the held-out pairs."""
    import torch
    from peft import PeftModel

    from tunesmith.model.loading import load_model, load_tokenizer, resolve_model
    from tunesmith.recipe import load_recipe
    from tunesmith.train.data import prepare_data
    from tunesmith.train.loop import evaluate
    from tunesmith.train.objectives import make_objective

    overrides = [o for o in tunesmith_overrides(cfg, Path(cfg["workdir"]) / "eval")
                 if not o.startswith("data.train=")]
    recipe = load_recipe(None, [*overrides, f"data.train={DATA / 'validation.jsonl'}"])
    ref = resolve_model(recipe.base_model)
    tokenizer = load_tokenizer(ref)
    objective = make_objective("dpo", 1024, recipe)
    pairs = prepare_data(recipe, tokenizer, recipe.data.max_length, objective.render_example).train
    budget = max(len(p) for p in pairs) * 4
    out = {}
    for adapter in adapters:
        model = PeftModel.from_pretrained(load_model(ref, dtype=torch.float32), adapter).eval()
        objective = make_objective("dpo", 1024, recipe)
        objective.prepare(model, tokenizer, [pairs], budget, torch.device("cpu"))
        out[adapter] = evaluate(model, objective, pairs, budget, torch.device("cpu"))
    return {"pairs": len(pairs), "metrics": out}


def worker_main(kind: str, config_path: Path, result_path: Path, sync: str | None) -> None:
    cfg = json.loads(config_path.read_text())
    baton = Baton(sync)
    if kind == "tunesmith":
        result = worker_tunesmith(cfg, baton)
    elif kind == "trl":
        result = worker_trl(cfg, cfg["order"], baton)
    else:
        result = worker_eval(cfg, cfg["adapters"])
    result_path.write_text(json.dumps(result))


def report(cfg: dict[str, Any], pair: dict[str, dict[str, Any]], evaluation: dict[str, Any],
           command: str, started: float, peaks: list[float]) -> str:
    rows = {}
    for tool, run in (("tunesmith", pair["tunesmith"]), ("TRL", pair["trl"])):
        timed = run["steps"][1:]
        seconds = sum(s["seconds"] for s in timed)
        metrics = evaluation["metrics"][run["adapter"]]
        rows[tool] = {"pairs_per_s": cfg["batch_size"] * len(timed) / seconds,
                      "tokens_per_s": sum(s["tokens"] for s in timed) / seconds, "seconds": seconds,
                      "tokens": sum(s["tokens"] for s in timed), "peak": run["peak_rss_mib"],
                      "baseline": run["baseline_rss_mib"], "loss": metrics["loss"],
                      "accuracy": metrics["reward_accuracy"],
                      "first": run["steps"][0].get("loss"), "last": run["steps"][-1].get("loss")}
    ts, trl = rows["tunesmith"], rows["TRL"]
    body = [[tool, f"{row['pairs_per_s']:.3f}", f"{row['tokens_per_s']:.1f}", f"{row['peak']:.0f}",
             f"{row['baseline']:.0f}", f"{row['loss']:.4f}", f"{row['accuracy']:.3f}"]
            for tool, row in rows.items()]
    body.append(["**tunesmith / TRL**", f"**{ts['pairs_per_s'] / trl['pairs_per_s']:.2f}x**",
                 f"{ts['tokens_per_s'] / trl['tokens_per_s']:.2f}x", f"**{ts['peak'] / trl['peak']:.2f}x**",
                 f"{ts['baseline'] / trl['baseline']:.2f}x", f"{ts['loss'] - trl['loss']:+.4f}",
                 f"{ts['accuracy'] - trl['accuracy']:+.3f}"])
    lines = [
        f"# DPO throughput: tunesmith vs TRL DPOTrainer ({dt.date.today().isoformat()})", "",
        *table(["tool", "pairs/s", "policy tokens/s", "peak RSS MiB", "model-loaded RSS MiB",
                "held-out DPO loss", "held-out reward accuracy"], body),
        "",
        f"- Model: {cfg['model_label']}; torch threads {pair['tunesmith']['threads']}; {cpu_description()}; "
        f"{versions()}; both in {cfg['dtype']} ({cfg['dtype_reason']}; TRL bf16={cfg['trl_bf16']}, base "
        f"weights in {cfg['weights_dtype']}), TRL "
        f"padding_free={cfg['trl_padding_free']}.",
        f"- Both: LoRA r={cfg['rank']} alpha={cfg['alpha']} dropout 0 on all linear layers, sigmoid DPO "
        f"beta {cfg['beta']}, AdamW lr {cfg['lr']} constant, grad-norm clip 1.0, {cfg['steps']} steps of "
        f"{cfg['batch_size']} pairs (same pairs, same order), reference = base with the adapter off, "
        "computed every step.",
        f"- pairs/s over steps 2..{cfg['steps']} (tunesmith {ts['seconds']:.1f} s, "
        f"TRL {trl['seconds']:.1f} s). "
        "Policy tokens: what reaches the decoder in grad-enabled forwards (non-padding where a mask is "
        f"passed): tunesmith {ts['tokens']}, TRL {trl['tokens']} (each tool's own rendering of the pairs). "
        "Per-step time ratio TRL/tunesmith: "
        f"{step_ratios([(pair['tunesmith']['steps'], pair['trl']['steps'])])}.",
        mfu_line(6 * cfg["decoder_params"],
                 f"6 x {cfg['decoder_params'] / 1e6:.1f} M decoder linear weights per policy token (the "
                 "policy's forward and input gradient, the reference's forward over the same tokens; no "
                 "attention or LM head, so a lower bound)",
                 {"tunesmith": ts["tokens_per_s"], "TRL": trl["tokens_per_s"]}, peaks, cfg["dtype"]),
        "- " + allocator_words(cfg, {"tunesmith": pair["tunesmith"]["steps"], "TRL": pair["trl"]["steps"]}),
        f"- Held-out: tunesmith's DPO evaluation of both adapters on {evaluation['pairs']} pairs of "
        "support_preference/validation.jsonl.",
        f"- Train loss at step 1 / {cfg['steps']}: tunesmith {ts['first']:.4f} / {ts['last']:.4f}, "
        f"TRL {trl['first']:.4f} / {trl['last']:.4f}. "
        f"Whole benchmark: {time.perf_counter() - started:.0f} s.",
        "", "Command:", "", "```", command, "```",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="smollm2, tiny, or a model folder / .gguf file")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="what both tools compute in (auto: bf16 where tunesmith's probe finds it "
                             "faster on this CPU, else fp32; TRL then gets bf16=True)")
    parser.add_argument("--trl-padded", action="store_true",
                        help="TRL padded batches instead of padding_free")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None)
    add_worker_arguments(parser, ["tunesmith", "trl", "eval"])
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.config, args.result, args.sync)
        return
    if args.steps < 2:
        parser.error("--steps must be at least 2 (step 1 is excluded as warm-up)")
    started = time.perf_counter()
    command = shlex.join([".venv/bin/python", "bench/dpo_throughput.py", *sys.argv[1:]])
    model = resolve_model_arg(args.model)
    dtype, reason = pick_dtype(args.dtype, full=False)
    workdir = Path(tempfile.mkdtemp(prefix="tunesmith-dpo-bench-"))
    cfg = {"location": model["location"], "gguf_file": model["gguf_file"], "base_model": model["base_model"],
           "model_label": model["label"], "steps": args.steps, "batch_size": args.batch_size,
           "max_length": args.max_length, "seed": args.seed, "rank": 16, "alpha": 32, "lr": args.lr,
           "beta": args.beta, "dtype": dtype, "trl_bf16": dtype == "bfloat16",
           "weights_dtype": dtype, "dtype_reason": reason,
           "trl_padding_free": not args.trl_padded, "workdir": str(workdir)}
    cfg["peer_allocator"] = args.peer_allocator
    print(f"model: {model['label']}\nwork folder: {workdir}\ndtype: {dtype} ({reason})", flush=True)
    cfg["order"] = training_order(cfg)
    cfg["decoder_params"] = decoder_linear_params(cfg)
    peaks = [matmul_peak_gflops(dtype=cfg["dtype"])]
    try:
        pair = alternate(cfg, workdir, "r0", __file__)
        peaks.append(matmul_peak_gflops(dtype=cfg["dtype"]))
        print("evaluating both adapters on the held-out pairs", flush=True)
        adapters = [pair["tunesmith"]["adapter"], pair["trl"]["adapter"]]
        evaluation = Worker("eval", {**cfg, "adapters": adapters}, workdir, "all", lockstep=False,
                                script=__file__).finish()
        text = report(cfg, pair, evaluation, command, started, peaks)
        print("\n" + text)
        output = args.output or RESULTS / f"dpo_throughput-{dt.date.today().isoformat()}.md"
        write_results(output, text, {"config": cfg, "runs": pair, "evaluation": evaluation})
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
