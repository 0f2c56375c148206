"""The bundled tiny model: its tokenizer and chat template (ChatML, prefix-stable), and a small
Llama pretrained on generated text, written to assets/models/tiny-chat by scripts/build_assets.py."""

from __future__ import annotations

import json
import math
import random
import re
import shutil
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from asset_phrases import SUPPORT_SYSTEM, Message

from tunesmith.data.templates import HERMES_TOOL_CALL, TEXT_MACRO

# --------------------------------------------------------------------------------------------
# Tokenizer and chat template
# --------------------------------------------------------------------------------------------

BOS, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = [BOS, IM_START, IM_END, PAD]  # ids 0..3 in this order
VOCAB_SIZE = 2048
MAX_LEN = 1024

# ChatML without a BOS token. Prefix-stable by construction: every message renders to a
# self-contained block, the tools line lives inside the (first) system block, and the
# generation prompt is exactly the opening of an assistant block. Assistant blocks are wrapped
# in {% generation %} so transformers can return an assistant-token mask. The content macro and
# the tool-call block are data/templates.py's, shared with the built-in chatml-tools template.
CHAT_TEMPLATE = (
    TEXT_MACRO
    + "{%- set ns = namespace(start=0) -%}"
    "{%- if tools -%}"
    "{{- '<|im_start|>system\\n' -}}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- set ns.start = 1 -%}"
    "{%- set sys = text(messages[0].content) -%}"
    "{%- if sys -%}{{- sys ~ '\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
    "{{- 'Tools: ' ~ (tools | tojson) ~ '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- for message in messages[ns.start:] -%}"
    "{{- '<|im_start|>' ~ message.role ~ '\\n' -}}"
    "{%- if message.role == 'assistant' -%}"
    "{%- generation -%}"
    "{%- set body = text(message.content) -%}"
    "{{- body -}}"
    "{%- if message.tool_calls -%}"
    "{%- for tc in message.tool_calls -%}"
    + HERMES_TOOL_CALL
    + "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>' -}}"
    "{%- endgeneration -%}"
    "{{- '\\n' -}}"
    "{%- else -%}"
    "{{- text(message.content) ~ '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def render_chatml(messages: Sequence[Message]) -> str:
    """Plain-Python ChatML for corpus building (matches CHAT_TEMPLATE for text-only chats)."""
    return "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)


def train_tokenizer(texts: Iterable[str], out_dir: Path) -> Any:
    """Byte-level BPE: any string round-trips exactly and offsets come for free."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(t) == i, t
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        unk_token=BOS,
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        model_max_length=MAX_LEN,
        clean_up_tokenization_spaces=False,
        padding_side="right",
    )
    hf.chat_template = CHAT_TEMPLATE
    hf.save_pretrained(out_dir)
    # transformers 5 writes its own class name and a list-valued extra_special_tokens, which
    # transformers 4.x (still allowed by pyproject) cannot load; the v4 spellings load in both.
    cfg_path = out_dir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    extra = cfg.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        cfg["additional_special_tokens"] = extra
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return hf


# --------------------------------------------------------------------------------------------
# Tiny model
# --------------------------------------------------------------------------------------------


def count_params(model: Any) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())


MODEL_README = """\
# tiny-chat

A deliberately tiny Llama-architecture chat model ({n_params:,} parameters: hidden size 128,
4 layers, 4 attention heads with 2 key/value heads, vocabulary 2048, tied embeddings), stored in
bfloat16 safetensors. It exists **only for tunesmith's tests and quickstart**, so that a full
fine-tune can run on a laptop CPU in seconds. It is not a useful language model.

## How it was built
Everything here is produced by `python scripts/build_assets.py` (seed {seed}), offline and
reproducibly:

* **Tokenizer**: byte-level BPE (vocabulary 2048) trained with the `tokenizers` library on the
  pretraining corpus. Special tokens: `<|endoftext|>` (bos/unk, id 0), `<|im_start|>` (id 1),
  `<|im_end|>` (eos, id 2), `<|pad|>` (pad, id 3). No BOS is added automatically.
* **Chat template**: ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`), no BOS, prefix-stable;
  supports `tools`, assistant `tool_calls`, content given as text parts, and `{{% generation %}}`
  markers for assistant-token masks.
* **Pretraining corpus** ({corpus_tokens:,} tokens): templated everyday English, neutral
  shopping/customer-service chats rendered in ChatML, and the train split of the Brightloom
  handbook. It contains none of the validation splits and none of the "Wren" house voice, so
  the base model knows the chat format and the domain's words, but not the voice that the
  sample fine-tuning datasets teach.
* **Training**: AdamW (peak learning rate {lr}, warm-up then cosine decay), {steps} steps of
  {batch} sequences x {seq} tokens on CPU with 2 threads (about 2.5 minutes); training loss
  {loss_start:.2f} at the first step -> {loss_end:.2f} (mean of the last 10 steps).

## Licence
Apache-2.0, the same as tunesmith.
"""


def build_model(docs: list[str], model_dir: Path, steps: int, seed: int) -> None:
    """Train the tokenizer, pretrain the tiny Llama and save both with the chat template."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True)

    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)

    t0 = time.perf_counter()
    plain = [re.sub(r"<\|im_(start|end)\|>", "\n", d) for d in docs]
    tok = train_tokenizer(plain, model_dir)
    print(f"  tokenizer trained in {time.perf_counter() - t0:.1f}s (vocab {len(tok)})")

    ids: list[int] = []
    for enc in tok(docs, add_special_tokens=False)["input_ids"]:
        ids.extend(enc)
        ids.append(tok.bos_token_id)  # <|endoftext|> separates documents
    stream = torch.tensor(ids, dtype=torch.long)
    print(f"  corpus: {len(docs)} documents, {stream.numel():,} tokens")

    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=384,
        max_position_embeddings=MAX_LEN,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        initializer_range=0.02,
    )
    model = LlamaForCausalLM(config)
    n_params = count_params(model)
    print(f"  model: {n_params:,} parameters")

    batch, seq, peak_lr, warmup = 16, 256, 3e-3, 20
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.95), weight_decay=0.1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return peak_lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return peak_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        starts = torch.randint(0, stream.numel() - seq, (batch,), generator=gen)
        x = torch.stack([stream[s : s + seq] for s in starts.tolist()])
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 10 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {losses[-1]:.3f}  ({time.perf_counter() - t0:.0f}s)")
    print(f"  pretraining took {(time.perf_counter() - t0) / 60:.1f} min")
    loss_start, loss_end = losses[0], sum(losses[-10:]) / min(10, len(losses))
    print(f"  loss {loss_start:.3f} -> {loss_end:.3f} (mean of last 10 steps)")

    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(model_dir)
    for path in model_dir.iterdir():
        path.chmod(0o644)  # safetensors are written owner-only; these files ship in the package
    (model_dir / "README.md").write_text(
        MODEL_README.format(
            n_params=n_params,
            seed=seed,
            corpus_tokens=stream.numel(),
            steps=steps,
            batch=batch,
            seq=seq,
            lr=peak_lr,
            loss_start=loss_start,
            loss_end=loss_end,
        ),
        encoding="utf-8",
    )
    sample_generation(model_dir)


def sample_generation(model_dir: Path) -> None:
    """Greedy reply from the saved model, to eyeball that it speaks ChatML (not the voice)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    messages = [
        {"role": "system", "content": SUPPORT_SYSTEM},
        {"role": "user", "content": "Where is my order BL-12345? I ordered it last week."},
    ]
    prompt = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=60, do_sample=False)
    reply = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=False)
    print("  sample greedy reply:", repr(reply))
