"""Tiny models of every family GGUF export covers, built from configs with random weights and
real tokenizer types trained here on a few sentences: byte-level BPE with each llama.cpp
pre-tokenizer (GPT-2, Llama 3, Qwen2, SmolLM's digit split) and sentencepiece-style BPE with
byte fallback (Mistral/Llama 2 with a prefix space, Gemma without). Each carries its family's
own chat template, so the Ollama translation is exercised too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.model.export.gguf_vocab import LLAMA3_REGEX, QWEN2_REGEX

CORPUS = [
    "Hello! Can you help me with my order? Where is my parcel? It was due on Monday.",
    "You are a helpful assistant. What colour is the blue box? The box is blue, thank you.",
    "Let me check that for you. Thanks — it was due on Monday, order 4412 of 2024-11-03.",
    "The quick brown fox jumps over the lazy dog 1234567890 times; isn't it? I'm sure we'll see.",
    "  spaced   out\n\nnew lines\tand tabs, Où est mon colis ? 📦 café naïve",
] * 3

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content']"
          " + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
           "<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
           "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
           "{% endif %}")
LLAMA3 = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
          "{% endif %}")
MISTRAL = ("{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
           "{{ '[SYSTEM_PROMPT]' + message['content'] + '[/SYSTEM_PROMPT]' }}"
           "{% elif message['role'] == 'user' %}{{ '[INST]' + message['content'] + '[/INST]' }}"
           "{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}")
GEMMA = ("{{ bos_token }}{% for message in messages %}"
         "{% set role = 'model' if message['role'] == 'assistant' "
         "else message['role'] %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + "
         "'<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}"
         "{% endif %}")
PHI3 = ("{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}")


@dataclass(frozen=True)
class Case:
    name: str                 # what the docs table calls it
    model_type: str
    tokenizer: str            # gpt-2 | llama-bpe | qwen2 | smollm | spm-prefix | spm
    template: str
    specials: tuple[str, ...]
    bos: str | None
    eos: str
    config: tuple[tuple[str, Any], ...] = ()


CHATML_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CASES = [
    Case("llama (Llama 3 tokenizer)", "llama", "llama-bpe", LLAMA3,
         ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
         "<|begin_of_text|>", "<|eot_id|>"),
    Case("llama (SmolLM2 tokenizer)", "llama", "smollm", SMOLLM2,
         ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), "<|im_start|>", "<|im_end|>"),
    Case("llama (GPT-2 tokenizer)", "llama", "gpt-2", CHATML,
         ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), None, "<|im_end|>"),
    Case("mistral", "mistral", "spm-prefix", MISTRAL,
         ("<unk>", "<s>", "</s>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"), "<s>", "</s>",
         (("sliding_window", None),)),
    Case("qwen2", "qwen2", "qwen2", CHATML, CHATML_SPECIALS, None, "<|im_end|>"),
    Case("qwen3", "qwen3", "qwen2", CHATML, CHATML_SPECIALS, None, "<|im_end|>",
         (("head_dim", 16),)),
    Case("gemma2", "gemma2", "spm", GEMMA, ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>",
                                            "<end_of_turn>"), "<bos>", "<end_of_turn>",
         (("head_dim", 16), ("query_pre_attn_scalar", 16), ("sliding_window", 64))),
    Case("gemma3", "gemma3_text", "spm", GEMMA, ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>",
                                                 "<end_of_turn>"), "<bos>", "<end_of_turn>",
         (("head_dim", 16), ("query_pre_attn_scalar", 16), ("sliding_window", 64))),
    Case("phi3", "phi3", "spm-prefix", PHI3, ("<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>",
                                              "<|system|>", "<|end|>"), "<s>", "<|end|>",
         (("sliding_window", None),)),
]


def build_tokenizer(case: Case) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if case.tokenizer.startswith("spm"):
        tokenizer = _spm_tokenizer(case)
    else:
        tokenizer = Tokenizer(models.BPE())
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=case.tokenizer != "llama-bpe"
                                              and case.tokenizer != "qwen2")
        if case.tokenizer in ("llama-bpe", "qwen2"):
            regex = LLAMA3_REGEX if case.tokenizer == "llama-bpe" else QWEN2_REGEX
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(regex), behavior="isolated"), byte_level])
        elif case.tokenizer == "smollm":
            tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                               byte_level])
        else:
            tokenizer.pre_tokenizer = byte_level
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=list(case.specials), show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=case.bos, eos_token=case.eos,
                                   unk_token="<unk>" if "<unk>" in case.specials else None,
                                   pad_token="<pad>" if "<pad>" in case.specials else case.eos)
    fast.chat_template = case.template
    return fast


def _spm_tokenizer(case: Case) -> Any:
    """Sentencepiece-style BPE: ▁ for spaces, byte fallback to <0xXX> tokens in the vocabulary."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, trainers

    prefix = case.tokenizer == "spm-prefix"
    steps = [normalizers.Prepend("▁")] if prefix else []
    trainee = Tokenizer(models.BPE())
    trainee.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    trainee.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=360, show_progress=False))
    learned = json_model(trainee)
    vocab: dict[str, int] = {}
    for token in (*case.specials, *[f"<0x{b:02X}>" for b in range(256)], *learned["vocab"]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>",
                                     fuse_unk=True))
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    steps_back = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tokenizer.decoder = decoders.Sequence(steps_back + ([decoders.Strip(" ", 1, 0)] if prefix else []))
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in case.specials])
    return tokenizer


def json_model(tokenizer: Any) -> dict[str, Any]:
    import json

    return json.loads(tokenizer.to_str())["model"]


def build_model(case: Case, folder: Path, seed: int = 0) -> Path:
    """A 2-layer model (6 for Gemma-3, whose 6th layer is its first global one) saved with its tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = build_tokenizer(case)
    layers = 6 if case.model_type == "gemma3_text" else 2
    config = AutoConfig.for_model(
        case.model_type, vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=case.model_type.startswith("gemma"),
        initializer_range=0.2, **dict(case.config))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
