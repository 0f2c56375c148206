#!/usr/bin/env python
"""SFT throughput: tunesmith against TRL's SFTTrainer (PEFT LoRA, or full fine-tuning with
--adapter full), same model, data and settings.

Each trainer runs in its own fresh subprocess (so its peak memory is its own); both load side by
side and then take turns, one optimizer step at a time, so a noisy minute on a shared machine
slows both alike. One shared evaluation function then scores both adapters on the same held-out
examples with the same masks. bench/README.md explains what is measured and what still differs.

    .venv/bin/python bench/sft_throughput.py                          # SmolLM2-135M-Instruct, 20 steps
    .venv/bin/python bench/sft_throughput.py --model tiny --steps 5   # smoke run on the bundled tiny model
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import shutil
import statistics
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
    load_model,
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

# SmolLM2-Instruct's own template (as shipped in the GGUF), and the same template with TRL's
# {% generation %} markers around what the assistant writes: its content and <|im_end|>. Both
# render byte-identical text (checked on every example before training).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)
SMOLLM2_TRAINING_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{{ '\n' }}{% else %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# --- the data -----------------------------------------------------------------------------------


def read_chats(path: Path) -> list[list[dict[str, Any]]]:
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def tunesmith_overrides(cfg: dict[str, Any], run_dir: Path) -> list[str]:
    steps = cfg["steps"]
    return [
        f"base_model={cfg['base_model']}",
        f"data.train={Path(cfg['data']) / 'train.jsonl'}",
        "data.validation_split=0",  # no held-out split: nothing is evaluated during training
        f"data.max_length={cfg['max_length']}",
        "data.loss_on=assistant",
        *(["adapter.kind=full"] if cfg.get("adapter") == "full" else [
            "adapter.kind=lora", f"adapter.rank={cfg['rank']}", f"adapter.alpha={cfg['alpha']}",
            "adapter.dropout=0.0", "adapter.target_modules=all-linear"]),
        "training.epochs=1", f"training.max_steps={steps}",
        f"training.batch_size={cfg['batch_size']}",
        # one packed row per step, like TRL's padding-free batch of `batch_size` examples
        f"training.micro_batch_tokens={cfg['batch_size'] * cfg['max_length']}",
        f"training.learning_rate={cfg['lr']}", "training.schedule=constant", "training.warmup_ratio=0",
        "training.weight_decay=0.0", "training.max_grad_norm=1.0",
        f"training.seed={cfg['seed']}", f"training.dtype={cfg['dtype']}", "training.device=cpu",
        "training.gradient_checkpointing=false",
        f"training.eval_every={steps + 1000}", f"training.save_every={steps + 1000}",
        "training.keep_checkpoints=1",
        f"output.dir={run_dir.parent}", f"output.name={run_dir.name}",
    ]


def training_plan(cfg: dict[str, Any]) -> dict[str, Any]:
    """tunesmith's own rendering and step plan for this recipe: the example order TRL is fed, and
    the token ids and loss masks both tools must agree on."""
    from tunesmith.data.pack import plan_epoch
    from tunesmith.model.loading import load_tokenizer as ts_load_tokenizer
    from tunesmith.model.loading import resolve_model
    from tunesmith.recipe import load_recipe
    from tunesmith.train.data import prepare_data

    recipe = load_recipe(None, tunesmith_overrides(cfg, Path(tempfile.gettempdir()) / "unused"))
    tokenizer = ts_load_tokenizer(resolve_model(recipe.base_model))
    data = prepare_data(recipe, tokenizer, recipe.data.max_length)
    chats = read_chats(Path(cfg["data"]) / "train.jsonl")
    if data.dropped or data.truncated or len(data.train) != len(chats):
        sys.exit(f"{len(data.dropped)} dropped / {data.truncated} truncated examples at max_length "
                 f"{cfg['max_length']}: the two tools would not see the same tokens; raise --max-length")
    plan = plan_epoch([len(e) for e in data.train], cfg["batch_size"], cfg["batch_size"] * cfg["max_length"],
                      cfg["seed"], 0)
    if cfg["steps"] > len(plan):
        sys.exit(f"--steps {cfg['steps']} is more than one epoch ({len(plan)} steps); use fewer steps")
    steps = [[i for micro in plan[s] for i in micro] for s in range(cfg["steps"])]
    if any(len(micros) != 1 for micros in plan[: cfg["steps"]]):
        sys.exit("a step did not fit one packed row; the layouts would differ")
    order = [i for step in steps for i in step]
    return {"order": order,
            "ids": [data.train[i].input_ids for i in order],
            "masks": [[0, *data.train[i].loss_mask[1:]] for i in order],
            "longest": max(len(e) for e in data.train),
            "template": tokenizer.chat_template}


# --- workers (each in its own process) ----------------------------------------------------------


def worker_tunesmith(cfg: dict[str, Any], baton: Baton) -> dict[str, Any]:
    import tunesmith.train.loop as loop
    from tunesmith.recipe import load_recipe

    run_dir = Path(cfg["workdir"]) / f"tunesmith-{cfg['tag']}"
    recipe = load_recipe(None, tunesmith_overrides(cfg, run_dir))
    # Instrumentation only: training itself is untouched. A step's tokens are its examples' tokens
    # (the train record's real_tokens); a shared system prompt is held once per packed row, so
    # fewer reach the decoder, kept as computed_tokens.
    recorder = TunesmithSteps(baton, tokens_key="real_tokens")
    recorder.install()
    result = loop.train(recipe, reporters=[recorder])
    recorder.add_step_times(run_dir)
    return recorder.result(result.final_dir)


def trl_training_template(tokenizer: Any) -> str | None:
    """A chat template TRL can take assistant masks from, rendering the same text as the model's."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return None
    if tokenizer.chat_template == SMOLLM2_TEMPLATE:
        return SMOLLM2_TRAINING_TEMPLATE
    return get_training_chat_template(tokenizer)


def worker_trl(cfg: dict[str, Any], plan: dict[str, Any], baton: Baton) -> dict[str, Any]:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(cfg)
    if tokenizer.chat_template != plan["template"]:
        sys.exit("TRL's tokenizer has another chat template than tunesmith's")
    chats = [[{"role": m["role"], "content": m["content"]} for m in chat]
             for chat in read_chats(Path(cfg["data"]) / "train.jsonl")]
    ordered = [chats[i] for i in plan["order"]]
    template = trl_training_template(tokenizer)
    if template is not None:
        for chat in ordered:
            if tokenizer.apply_chat_template(chat, tokenize=False) != tokenizer.apply_chat_template(
                    chat, tokenize=False, chat_template=template):
                sys.exit("the training template renders different text from the model's template")
        tokenizer.chat_template = template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    model = load_trl_model(cfg)
    args = SFTConfig(
        output_dir=str(Path(cfg["workdir"]) / f"trl-{cfg['tag']}"),
        max_steps=cfg["steps"], num_train_epochs=1,
        per_device_train_batch_size=cfg["batch_size"], gradient_accumulation_steps=1,
        learning_rate=cfg["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim=TRL_OPTIM, seed=cfg["seed"], data_seed=cfg["seed"],
        # bf16: autocast over weights held as tunesmith holds them (bf16 base under LoRA, fp32
        # master weights under full fine-tuning), PEFT's adapter weights in fp32 either way.
        bf16=cfg["dtype"] == "bfloat16", fp16=False, use_cpu=True, gradient_checkpointing=False,
        # padding-free: each step's examples are flattened into one row with restarting
        # position_ids, exactly tunesmith's layout. TRL needs max_length=None for that without
        # packing; no example is longer than --max-length (checked), so nothing would be cut.
        padding_free=True, packing=False, max_length=None,
        assistant_only_loss=True, completion_only_loss=False,
        train_sampling_strategy="sequential", shuffle_dataset=False,
        eval_strategy="no", save_strategy="no", logging_steps=1, report_to="none", disable_tqdm=True,
        dataloader_num_workers=0,
    )
    lora = LoraConfig(r=cfg["rank"], lora_alpha=cfg["alpha"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    steps = TrlSteps(baton)

    dataset = Dataset.from_list([{"messages": chat} for chat in ordered])
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=None if cfg.get("adapter") == "full" else lora,
                         callbacks=[steps.callback()])
    prepared = trainer.train_dataset
    masks = [[0, *(int(t != -100) for t in labels[1:])] for labels in prepared["labels"]]
    mask_diff = [(k, sum(a != b for a, b in zip(mine, theirs, strict=True)))
                 for k, (mine, theirs) in enumerate(zip(masks, plan["masks"], strict=True)) if mine != theirs]
    steps.start(trainer.model)
    trainer.train()
    steps.add_log(trainer.state.log_history, {"loss": "loss"})
    adapter = Path(cfg["workdir"]) / f"trl-{cfg['tag']}" / "final"
    trainer.model.save_pretrained(adapter)
    same_ids = [list(x) for x in prepared["input_ids"]] == plan["ids"]
    return {**steps.result(adapter), "same_input_ids": same_ids, "mask_differences": mask_diff}


def assistant_mask(tokenizer: Any, chat: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and a mask of what each assistant turn writes (its content and
    the end-of-turn text right after it, not the whitespace that follows); turns with weight 0
    are context, as in the OpenAI format."""
    plain = [{"role": m["role"], "content": m["content"]} for m in chat]
    full = tokenizer.apply_chat_template(plain, tokenize=False)
    spans = []
    for index, message in enumerate(chat):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        prompt = tokenizer.apply_chat_template(plain[:index], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(plain[: index + 1], tokenize=False)
        if not (full.startswith(prompt) and full.startswith(through)):
            raise ValueError("the chat template is not prefix-stable")
        spans.append((len(prompt), len(prompt) + len(through[len(prompt):].rstrip())))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(b > a and any(s <= a < e for s, e in spans)) for a, b in encoded["offset_mapping"]]
    mask[0] = 0
    return list(encoded["input_ids"]), mask


def worker_eval(cfg: dict[str, Any], adapters: list[str]) -> dict[str, Any]:
    """The one held-out evaluation, applied to the base model and to every adapter: a plain
    transformers forward per example and cross-entropy over its assistant tokens."""
    import torch
    import torch.nn.functional as F
    from peft import PeftModel

    tokenizer = load_tokenizer(cfg)
    chats = read_chats(Path(cfg["data"]) / "validation.jsonl")
    examples = [assistant_mask(tokenizer, chat) for chat in chats]
    base = load_model(cfg).eval()

    @torch.no_grad()
    def held_out_loss(model: Any) -> float:
        total, count = 0.0, 0
        for ids, mask in examples:
            logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
            keep = torch.tensor(mask[1:], dtype=torch.bool)
            total += float(F.cross_entropy(logits[keep], torch.tensor(ids[1:])[keep], reduction="sum"))
            count += int(keep.sum())
        return total / count

    losses = {"base": held_out_loss(base)}
    if cfg.get("adapter") == "full":  # each run saved a whole model
        from transformers import AutoModelForCausalLM

        for path in adapters:
            trained = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            losses[path] = held_out_loss(trained)
        return {"losses": losses, "examples": len(examples), "tokens": sum(sum(m[1:]) for _, m in examples)}
    for path in adapters:
        model = PeftModel.from_pretrained(base, path).eval()
        losses[path] = held_out_loss(model)
        base = model.unload()
    return {"losses": losses, "examples": len(examples), "tokens": sum(sum(m[1:]) for _, m in examples)}


def worker_main(kind: str, config_path: Path, result_path: Path, sync: str | None) -> None:
    cfg = json.loads(config_path.read_text())
    baton = Baton(sync)
    if kind == "tunesmith":
        result = worker_tunesmith(cfg, baton)
    elif kind == "trl":
        result = worker_trl(cfg, json.loads(Path(cfg["plan"]).read_text()), baton)
    else:
        result = worker_eval(cfg, cfg["adapters"])
    result_path.write_text(json.dumps(result))


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    timed = run["steps"][1:]  # step 1 is warm-up
    tokens = sum(s["tokens"] for s in timed)
    seconds = sum(s["seconds"] for s in timed)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "first_loss": run["steps"][0].get("loss"), "last_loss": run["steps"][-1].get("loss")}


def report(cfg: dict[str, Any], runs: dict[str, list[dict[str, Any]]], evaluation: dict[str, Any],
           command: str, started: float, peaks: list[float]) -> str:
    rows = {}
    for tool, tool_runs in runs.items():
        sums = [summarise(r) for r in tool_runs]
        rows[tool] = {
            "tokens_per_s": statistics.median(s["tokens_per_s"] for s in sums),
            "each_tokens_per_s": [round(s["tokens_per_s"], 1) for s in sums],
            "tokens": sums[0]["tokens"], "seconds": [round(s["seconds"], 1) for s in sums],
            "peak": statistics.median(r["peak_rss_mib"] for r in tool_runs),
            "baseline": statistics.median(r["baseline_rss_mib"] for r in tool_runs),
            "process_max": statistics.median(r["process_max_rss_mib"] for r in tool_runs),
            "loss": statistics.mean(evaluation["losses"][r["adapter"]] for r in tool_runs),
            "first_loss": sums[0]["first_loss"], "last_loss": sums[0]["last_loss"],
        }
    ts, trl = rows["tunesmith"], rows["TRL"]
    # Step-by-step ratios: the same examples, run within seconds of each other.
    pairs = [(x["steps"], y["steps"]) for x, y in zip(runs["tunesmith"], runs["TRL"], strict=True)]
    ratios = step_ratios(pairs, per="tokens")
    trl_run = runs["TRL"][0]
    mask_diff = trl_run["mask_differences"]
    same_init = len({r["lora_init"] for rs in runs.values() for r in rs}) == 1
    overhead_ts, overhead_trl = ts["peak"] - ts["baseline"], trl["peak"] - trl["baseline"]
    full = cfg.get("adapter") == "full"
    trained = ("full fine-tuning (every weight trained)" if full else
               f"LoRA r={cfg['rank']} alpha={cfg['alpha']} dropout 0 on all linear layers")
    computed = sum(s.get("computed_tokens", s["tokens"]) for s in runs["tunesmith"][0]["steps"][1:])
    body = [[tool, f"{row['tokens_per_s']:.1f}", f"{row['peak']:.0f}", f"{row['baseline']:.0f}",
             f"{row['peak'] - row['baseline']:.0f}", f"{row['loss']:.4f}"] for tool, row in rows.items()]
    body.append(["**tunesmith / TRL**", f"**{ts['tokens_per_s'] / trl['tokens_per_s']:.2f}x**",
                 f"**{ts['peak'] / trl['peak']:.2f}x**", f"{ts['baseline'] / trl['baseline']:.2f}x",
                 f"{overhead_ts / overhead_trl:.2f}x", f"{ts['loss'] - trl['loss']:+.4f}"])
    lines = [
        f"# SFT throughput: tunesmith vs TRL ({dt.date.today().isoformat()})",
        "",
        *table(["tool", "tokens/s", "peak RSS MiB", "model-loaded RSS MiB", "training overhead MiB",
                "held-out loss"], body),
        "",
        "Targets (issue 17): tokens/s >= 2.5x TRL's at its best settings for the machine, peak RSS <= "
        "TRL's, equal held-out loss.",
        "",
        f"- Model: {cfg['model_label']}; torch threads {runs['tunesmith'][0]['threads']}; "
        f"{cpu_description()}; {versions()}.",
        f"- Both: {trained}, AdamW "
        f"lr {cfg['lr']} constant, no warmup, grad-norm clip 1.0, {precision_words(cfg)}, "
        f"seed {cfg['seed']}, "
        f"{cfg['steps']} steps of {cfg['batch_size']} examples (the same examples in the same order), "
        f"max length {cfg['max_length']}, loss on assistant tokens, every step one padding-free row with "
        "restarting position ids, no gradient checkpointing, no evaluation or saving while timed.",
        f"- tokens/s: the steps' example tokens over steps 2..{cfg['steps']} (TRL: counted at the decoder's "
        f"input; tunesmith: its own count, {computed} of them computed at the decoder, a shared "
        "prefix held once per row) "
        f"({ts['tokens']} tokens for tunesmith, {trl['tokens']} for TRL) divided by the summed step "
        f"times (tunesmith {ts['seconds']} s, TRL {trl['seconds']} s); the trainers run in two "
        "processes that take turns step by step. Per-step time ratio TRL/tunesmith on the same "
        f"examples: {ratios}.",
        f"- Peak RSS: {runs['tunesmith'][0]['peak_method']}, from model + adapter ready to the end of "
        "the last step. Model-loaded RSS is the RSS at that start, so training overhead = peak - "
        f"model-loaded. Whole-process ru_maxrss (includes loading the model): tunesmith "
        f"{ts['process_max']:.0f} MiB, TRL {trl['process_max']:.0f} MiB.",
        f"- Held-out loss: one evaluation function (transformers forward, cross-entropy over the "
        f"assistant tokens of {Path(cfg['data']).name}/validation.jsonl: "
        f"{evaluation['examples']} conversations, "
        f"{evaluation['tokens']} tokens) applied to both adapters; base model without adapter "
        f"{evaluation['losses']['base']:.4f}.",
        f"- Train loss at step 1 / step {cfg['steps']}: tunesmith {ts['first_loss']:.4f} / "
        f"{ts['last_loss']:.4f}, TRL {trl['first_loss']:.4f} / {trl['last_loss']:.4f}.",
        f"- Checks: same token ids in both: {trl_run['same_input_ids']}; identical "
        f"{'starting weights' if full else 'LoRA initialisation'}: "
        f"{same_init}; examples whose trained-token masks differ: {len(mask_diff)}"
        + (f" ({sum(n for _, n in mask_diff)} tokens in assistant turns marked \"weight\": 0, which "
           "tunesmith leaves untrained and TRL trains on)." if mask_diff else "."),
        mfu_line((6 if full else 4) * cfg["decoder_params"],
                 f"{6 if full else 4} x {cfg['decoder_params'] / 1e6:.1f} M decoder linear weights per token "
                 "the decoder computed (forward, input gradient" + (", weight gradient" if full else "")
                 + "; no attention or LM head, so a lower bound)",
                 {"tunesmith": computed / sum(s["seconds"] for s in runs["tunesmith"][0]["steps"][1:]),
                  "TRL": sum(s["tokens"] for s in trl_run["steps"][1:])
                  / sum(s["seconds"] for s in trl_run["steps"][1:])}, peaks, cfg["dtype"]),
        "- " + allocator_words(cfg, {"tunesmith": runs["tunesmith"][0]["steps"], "TRL": trl_run["steps"]}),
        f"- tokens/s of each repeat: tunesmith {ts['each_tokens_per_s']}, TRL {trl['each_tokens_per_s']}. "
        f"Whole benchmark: {time.perf_counter() - started:.0f} s.",
        "",
        "Command:",
        "",
        "```",
        command,
        "```",
    ]
    return "\n".join(lines) + "\n"


def precision_words(cfg: dict[str, Any]) -> str:
    if cfg["dtype"] == "float32":
        return f"float32 ({cfg['dtype_reason']})"
    held = "base weights in bf16" if cfg["weights_dtype"] == "bfloat16" else "fp32 master weights"
    return (f"bf16 compute ({cfg['dtype_reason']}): {held}, trained weights, AdamW state and loss "
            "sums fp32; tunesmith training.dtype=bfloat16, TRL bf16=True")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2",
                        help="smollm2 (default), tiny (bundled tiny-chat), or a model folder / .gguf file")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8, help="examples per optimizer step")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1,
                        help="fresh pairs of trainer processes; who goes first alternates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--adapter", choices=["lora", "full"], default="lora",
                        help="LoRA r16 on all linear layers (default), or full fine-tuning in both tools")
    parser.add_argument("--data", default="support",
                        help="a data set in tunesmith/assets/data (support: long chats; routing: ~60-token "
                             "examples) or a folder with train.jsonl and validation.jsonl")
    parser.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="what both tools compute in (auto: bf16 where tunesmith's probe finds it "
                             "faster on this CPU, else fp32)")
    parser.add_argument("--output", type=Path, default=None,
                        help="results markdown (default bench/results/sft_throughput-DATE.md)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (runs, adapters, logs)")
    add_worker_arguments(parser, ["tunesmith", "trl", "eval"])
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.config, args.result, args.sync)
        return
    if args.steps < 2:
        parser.error("--steps must be at least 2 (step 1 is excluded as warm-up)")

    started = time.perf_counter()
    command = shlex.join([".venv/bin/python", "bench/sft_throughput.py", *sys.argv[1:]])
    model = resolve_model_arg(args.model)
    workdir = Path(tempfile.mkdtemp(prefix="tunesmith-bench-"))
    cfg = {"location": model["location"], "gguf_file": model["gguf_file"], "base_model": model["base_model"],
           "model_label": model["label"], "steps": args.steps, "batch_size": args.batch_size,
           "max_length": args.max_length, "seed": args.seed, "adapter": args.adapter,
           "rank": 16, "alpha": 32, "lr": 2e-4,
           "workdir": str(workdir), "plan": str(workdir / "plan.json"),
           "data": str(DATA_ROOT / args.data if (DATA_ROOT / args.data).is_dir()
                       else Path(args.data).resolve())}
    cfg["peer_allocator"] = args.peer_allocator
    cfg["dtype"], cfg["dtype_reason"] = pick_dtype(args.dtype, args.adapter == "full")
    cfg["weights_dtype"] = cfg["dtype"] if args.adapter == "lora" else "float32"
    print(f"model: {model['label']}\nwork folder: {workdir}\ndtype: {cfg['dtype']} ({cfg['dtype_reason']})",
          flush=True)
    plan = training_plan(cfg)
    (workdir / "plan.json").write_text(json.dumps(plan))

    cfg["decoder_params"] = decoder_linear_params(cfg)
    peaks = [matmul_peak_gflops(dtype=cfg["dtype"])]
    runs: dict[str, list[dict[str, Any]]] = {"tunesmith": [], "TRL": []}
    for repeat in range(args.repeats):
        first = "tunesmith" if repeat % 2 == 0 else "trl"
        print(f"repeat {repeat + 1}/{args.repeats}: loading both trainers, then alternating steps",
              flush=True)
        pair = alternate(cfg, workdir, f"r{repeat}", __file__, first)
        runs["tunesmith"].append(pair["tunesmith"])
        runs["TRL"].append(pair["trl"])
        for tool, result in (("tunesmith", pair["tunesmith"]), ("TRL", pair["trl"])):
            print(f"  {tool:9s}: {summarise(result)['tokens_per_s']:6.1f} tokens/s, peak RSS "
                  f"{result['peak_rss_mib']:.0f} MiB (model-loaded {result['baseline_rss_mib']:.0f})",
                  flush=True)
    print("evaluating both adapters on the held-out examples", flush=True)
    adapters = [r["adapter"] for tool_runs in runs.values() for r in tool_runs]
    evaluator = Worker("eval", {**cfg, "adapters": adapters}, workdir, "all", lockstep=False, script=__file__)
    peaks.append(matmul_peak_gflops(dtype=cfg["dtype"]))
    evaluation = evaluator.finish()
    text = report(cfg, runs, evaluation, command, started, peaks)
    print("\n" + text)
    output = args.output or RESULTS / f"sft_throughput-{dt.date.today().isoformat()}.md"
    write_results(output, text, {"config": cfg, "runs": runs, "evaluation": evaluation})
    if args.keep:
        print(f"kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
