#!/usr/bin/env python
"""GPU training benchmark: tunesmith against TRL's SFTTrainer (+ PEFT for LoRA) on Qwen2-shaped
models built from configs (random weights, so nothing has to be downloaded or carried).

For each model size x adapter kind x tool, one fresh worker process trains the same synthetic
chats for a few steps and reports tokens/s (steps 2.. of every step's non-padding tokens at the
decoder), peak GPU memory (torch.cuda.max_memory_allocated from the first step) and MFU: model
FLOPs per second over the bf16 matmul peak measured on this GPU at start-up (see `flops_per_token`).
Full fine-tuning runs tunesmith under torchrun with one rank, which is FSDP2 (`fully_shard`).
On a dedicated GPU the workers run one after the other (no alternating steps needed).

    .venv/bin/python bench/gpu_bench.py                 # 0.5B and 1.5B, LoRA and full, both tools
    .venv/bin/python bench/gpu_bench.py --smoke         # tiny Qwen2 on the CPU, to check it runs (~1 min)

Sized to finish under 8 minutes on one H200 (8 workers; most of it is process start-up).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "src" / "tunesmith" / "assets" / "models" / "tiny-chat"
RESULTS = ROOT / "bench" / "results"

# Qwen2-0.5B and Qwen2-1.5B shapes (Qwen2.5 has the same); "tiny" is the CPU smoke shape.
SIZES: dict[str, dict[str, Any]] = {
    "0.5b": {"hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
             "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936},
    "1.5b": {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
             "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936},
    "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 0},  # 0: the tokenizer's
}
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
              "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}


# --- the model and the data ---------------------------------------------------------------------


def build_model(size: str, folder: Path, device: str) -> Path:
    """A Qwen2 with random weights (seed 0), saved with tunesmith's bundled tokenizer."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    shape = dict(SIZES[size])
    shape["vocab_size"] = shape["vocab_size"] or len(tokenizer)
    config = Qwen2Config(**shape, max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa")
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_data(path: Path, count: int, words: int, seed: int = 0) -> Path:
    """Synthetic chats: a question and a reply of random words (about `words` tokens each)."""
    rng = random.Random(seed)
    vocab = ["wool", "order", "parcel", "skein", "colour", "needle", "refund", "pattern", "dye", "label",
             "stock", "ship", "return", "swatch", "yarn", "merino", "alpaca", "gauge", "cable", "twist"]
    with path.open("w", encoding="utf-8") as out:
        for _ in range(count):
            question = " ".join(rng.choice(vocab) for _ in range(words // 4))
            reply = " ".join(rng.choice(vocab) for _ in range(words))
            out.write(json.dumps({"messages": [{"role": "user", "content": question},
                                               {"role": "assistant", "content": reply}]}) + "\n")
    return path


def flops_per_token(config: Any, adapter: str, seq: int) -> float:
    """Model FLOPs per trained-on token: 2 per weight in the forward pass, 2 more for the input
    gradients and, under full fine-tuning, 2 for the weight gradients (LoRA's own weights are
    negligible); the LM head counted on every position; causal attention's two matmuls over
    half the sequence on average. The usual 6N convention for full, 4N for frozen weights."""
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * config.intermediate_size  # q, o, k, v, MLP
    weights = layers * per_layer + config.vocab_size * h
    passes = 6 if adapter == "full" else 4
    attention = layers * 2 * 2 * h * (seq / 2) * 3  # forward, and twice that backward (no weights)
    return passes * weights + attention


def matmul_peak_tflops(device: str) -> float:
    """Measured bf16 (GPU) or fp32 (CPU smoke) matmul TFLOP/s: the MFU denominator."""
    import torch

    n = 8192 if device == "cuda" else 512
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 1.0:
        a @ b
        count += 1
    sync(device)
    return 2 * n**3 * count / (time.perf_counter() - started) / 1e12


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_mib(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


class TokenCounter:
    """Tokens reaching the decoder in grad-enabled forwards (attention-mask ones if a mask is given)."""

    def __init__(self, decoder: Any) -> None:
        self.total = 0
        decoder.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        if not torch.is_grad_enabled():
            return
        mask, ids = kwargs.get("attention_mask"), kwargs.get("input_ids", args[0] if args else None)
        self.total += int(mask.sum()) if mask is not None and mask.dim() == 2 else int(ids.numel())


# --- workers ------------------------------------------------------------------------------------


def worker_tunesmith(cfg: dict[str, Any]) -> dict[str, Any]:
    import tunesmith.train.loop as loop
    from tunesmith.recipe import load_recipe

    device = cfg["device"]
    steps = cfg["steps"]
    run_dir = Path(cfg["workdir"]) / f"tunesmith-{cfg['tag']}"
    recipe = load_recipe(None, [
        f"base_model={cfg['model']}", f"data.train={cfg['data']}", "data.validation_split=0",
        f"data.max_length={cfg['max_length']}", f"adapter.kind={cfg['adapter']}", "adapter.rank=16",
        "adapter.alpha=32", "adapter.dropout=0.0", "adapter.target_modules=all-linear",
        "training.epochs=1", f"training.max_steps={steps}", f"training.batch_size={cfg['batch_size']}",
        f"training.micro_batch_tokens={cfg['batch_size'] * cfg['max_length']}",
        f"training.learning_rate={2e-4 if cfg['adapter'] == 'lora' else 2e-5}", "training.warmup_ratio=0",
        "training.dtype=auto", f"training.device={device}", "training.gradient_checkpointing=false",
        f"training.eval_every={steps + 1000}", f"training.save_every={steps + 1000}",
        "training.keep_checkpoints=1", f"output.dir={run_dir.parent}", f"output.name={run_dir.name}"])
    state: dict[str, Any] = {"steps": []}
    original_apply_adapter = loop.apply_adapter

    def instrumented(model: Any, config: Any) -> Any:
        model = original_apply_adapter(model, config)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        state["counter"] = TokenCounter(base.get_decoder())
        state["config"] = base.config
        return model

    class Recorder:
        def report(self, record: dict[str, Any]) -> None:
            if record.get("type") == "start":
                state["auto"] = record.get("auto")
                reset_peak(device)
                state["last"] = state["counter"].total
            elif record.get("type") == "train":
                sync(device)
                total = state["counter"].total
                state["steps"].append({"tokens": total - state["last"], "seconds": record["elapsed"]})
                state["last"] = total

        def close(self) -> None:
            pass

    loop.apply_adapter = instrumented
    loop.train(recipe, reporters=[Recorder()])
    return {"steps": state["steps"], "peak_mib": peak_memory_mib(device), "auto": state.get("auto"),
            "flops_per_token": flops_per_token(state["config"], cfg["adapter"], cfg["max_length"]),
            "parallel": "FSDP2 (torchrun, 1 rank)" if os.environ.get("WORLD_SIZE") else "single process"}


def worker_trl(cfg: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    device = cfg["device"]
    tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
    cuda = device == "cuda"
    model = AutoModelForCausalLM.from_pretrained(
        cfg["model"], dtype=torch.bfloat16 if cuda else torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False
    rows = [json.loads(line)["messages"] for line in Path(cfg["data"]).read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": [m[0]], "completion": [m[1]]} for m in rows])
    args = SFTConfig(
        output_dir=str(Path(cfg["workdir"]) / f"trl-{cfg['tag']}"), max_steps=cfg["steps"],
        per_device_train_batch_size=cfg["batch_size"], gradient_accumulation_steps=1,
        learning_rate=2e-4 if cfg["adapter"] == "lora" else 2e-5, lr_scheduler_type="linear",
        warmup_steps=0, optim="adamw_torch_fused", bf16=cuda,
        use_cpu=not cuda, gradient_checkpointing=False, padding_free=True, packing=False, max_length=None,
        completion_only_loss=True, save_strategy="no", eval_strategy="no", logging_steps=1,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, seed=0)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    state: dict[str, Any] = {"steps": []}

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
            sync(device)
            if not state["steps"]:
                reset_peak(device)
            state["start"], state["start_tokens"] = time.perf_counter(), state["counter"].total

        def on_step_end(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
            sync(device)
            state["steps"].append({"seconds": time.perf_counter() - state["start"],
                                   "tokens": state["counter"].total - state["start_tokens"]})

    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora if cfg["adapter"] == "lora" else None, callbacks=[Timer()])
    trained = trainer.model
    base = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
    state["counter"] = TokenCounter(base.get_decoder())
    trainer.train()
    return {"steps": state["steps"], "peak_mib": peak_memory_mib(device), "parallel": "single process",
            "flops_per_token": flops_per_token(base.config, cfg["adapter"], cfg["max_length"])}


# --- the driver ---------------------------------------------------------------------------------


def run_worker(tool: str, cfg: dict[str, Any], workdir: Path, torchrun: bool) -> dict[str, Any]:
    config = workdir / f"{cfg['tag']}.config.json"
    result = workdir / f"{cfg['tag']}.result.json"
    log = workdir / f"{cfg['tag']}.log"
    config.write_text(json.dumps(cfg))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"] \
        if torchrun else [sys.executable]
    command = [*launcher, __file__, "--worker", tool, "--config", str(config), "--result", str(result)]
    with log.open("w") as out:
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT,
                               env={**os.environ, **WORKER_ENV}, timeout=cfg["timeout"])
    if code != 0:
        sys.stderr.write(log.read_text()[-4000:])
        return {"error": f"exit {code}; see the log above"}
    return json.loads(result.read_text())


def summarise(result: dict[str, Any], peak_tflops: float) -> dict[str, Any]:
    if "error" in result:
        return result
    timed = result["steps"][1:] or result["steps"]
    tokens, seconds = sum(s["tokens"] for s in timed), sum(s["seconds"] for s in timed)
    tokens_per_s = tokens / seconds
    return {"tokens_per_s": tokens_per_s, "peak_mib": result["peak_mib"], "parallel": result["parallel"],
            "mfu": tokens_per_s * result["flops_per_token"] / (peak_tflops * 1e12),
            "auto": result.get("auto")}


def table(rows: list[dict[str, Any]], peak: float, device: str) -> str:
    memory = "peak GPU MiB" if device == "cuda" else "peak RSS MiB"
    lines = [f"| model | adapter | tool | how | tokens/s | {memory} | MFU (of {peak:.3g} TFLOP/s measured) |",
             "|---|---|---|---|---:|---:|---:|"]
    for row in rows:
        for tool in ("tunesmith", "TRL"):
            s = row.get(tool)
            if s is None:
                continue
            if "error" in s:
                lines.append(f"| {row['size']} | {row['adapter']} | {tool} | failed: {s['error']} | | | |")
                continue
            lines.append(f"| {row['size']} | {row['adapter']} | {tool} | {s['parallel']} | "
                         f"{s['tokens_per_s']:.0f} | {s['peak_mib']:.0f} | {100 * s['mfu']:.1f}% |")
        ts, trl = row.get("tunesmith"), row.get("TRL")
        if ts and trl and "error" not in ts and "error" not in trl:
            lines.append(f"| {row['size']} | {row['adapter']} | **tunesmith / TRL** | | "
                         f"**{ts['tokens_per_s'] / trl['tokens_per_s']:.2f}x** | "
                         f"**{ts['peak_mib'] / trl['peak_mib']:.2f}x** | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny Qwen2 on the CPU: checks the script runs")
    parser.add_argument("--sizes", default="0.5b,1.5b")
    parser.add_argument("--adapters", default="lora,full")
    parser.add_argument("--tools", default="tunesmith,trl")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--no-torchrun", action="store_true", help="full fine-tuning in one plain process")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--worker", choices=["tunesmith", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        cfg = json.loads(args.config.read_text())
        result = worker_tunesmith(cfg) if args.worker == "tunesmith" else worker_trl(cfg)
        if int(os.environ.get("RANK", "0")) == 0:
            args.result.write_text(json.dumps(result))
        return

    import torch

    started = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    if not args.smoke and device != "cuda":
        sys.exit("no CUDA GPU here: run with --smoke to check the script on the CPU")
    sizes = ["tiny"] if args.smoke else args.sizes.split(",")
    steps = 3 if args.smoke else args.steps
    batch, length = (2, 128) if args.smoke else (args.batch_size, args.max_length)
    tools = args.tools.split(",")
    workdir = Path(tempfile.mkdtemp(prefix="tunesmith-gpu-bench-"))
    try:
        peak = matmul_peak_tflops(device)
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke)"
        print(f"{name}: measured matmul peak {peak:.3g} TFLOP/s; work folder {workdir}", flush=True)
        data = write_data(workdir / "train.jsonl", batch * (steps + 2), words=max(8, length // 3))
        rows = []
        for size in sizes:
            model = build_model(size, workdir / f"model-{size}", device)
            for adapter in args.adapters.split(","):
                row: dict[str, Any] = {"size": size, "adapter": adapter}
                for tool in tools:
                    cfg = {"model": str(model), "data": str(data), "adapter": adapter, "steps": steps,
                           "batch_size": batch, "max_length": length, "device": device,
                           "workdir": str(workdir), "tag": f"{tool}-{size}-{adapter}", "timeout": 300}
                    torchrun = tool == "tunesmith" and adapter == "full" and device == "cuda" \
                        and not args.no_torchrun
                    result = summarise(run_worker(tool, cfg, workdir, torchrun), peak)
                    row["TRL" if tool == "trl" else "tunesmith"] = result
                    shown = "failed" if "error" in result else f"{result['tokens_per_s']:.0f} tokens/s"
                    print(f"  {size} {adapter} {tool}: {shown}", flush=True)
                rows.append(row)
            shutil.rmtree(workdir / f"model-{size}", ignore_errors=True)
        command = shlex.join([".venv/bin/python", "bench/gpu_bench.py", *sys.argv[1:]])
        text = "\n".join([
            f"# GPU benchmark: tunesmith vs TRL ({dt.date.today().isoformat()}, {name})", "",
            table(rows, peak, device), "",
            f"{steps} steps of {batch} synthetic chats of about {length} tokens; steps 2.. timed; "
            f"whole benchmark {time.perf_counter() - started:.0f} s.", "", "```", command, "```", ""])
        print("\n" + text)
        output = args.output or RESULTS / f"gpu_bench{'-smoke' if args.smoke else ''}-{dt.date.today()}.md"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        output.with_suffix(".json").write_text(json.dumps({"peak_tflops": peak, "rows": rows}, indent=1))
        print(f"written: {output}")
        if any("error" in r.get(t, {}) for r in rows for t in ("tunesmith", "TRL")):
            sys.exit(1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
