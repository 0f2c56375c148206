"""A tiny model whose greedy reply is fixed in its weights: the bundled model's shape, with
the pieces of a chosen reply added to its tokenizer as whole tokens and a weight pattern
that makes each token predict the next (a bigram chain ending in the end token).

Its layers are switched off (attention and MLP outputs zeroed), so the next token depends
on the current token alone; each chain token's embedding is a distinct Hadamard row (±1,
orthogonal, unit RMS), and the output row of its successor is that same row, so the
successor's logit is 10 x 128 and every other logit is 0. Used to test what the server
does with a reply - tool calls above all - without training a model in the test."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path


def _hadamard(size: int) -> list[list[int]]:
    rows = [[1]]
    while len(rows) < size:
        rows = [r + r for r in rows] + [r + [-x for x in r] for r in rows]
    return rows


def forced_model(folder: Path, pieces: list[str]) -> Path:
    """The bundled model, changed to answer every chat prompt with "".join(pieces)."""
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    from tunesmith.data.render import Renderer
    from tunesmith.model.loading import BUNDLED

    shutil.copytree(BUNDLED["tunesmith/tiny-chat"], folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.add_tokens(pieces)
    tokenizer.save_pretrained(folder)
    chain = [Renderer(tokenizer).prompt_ids([{"role": "user", "content": "hi"}])[-1]]
    chain += [tokenizer.convert_tokens_to_ids(p) for p in pieces] + [tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain), "every piece must be its own token"

    config = json.loads((folder / "config.json").read_text())
    width, vocab = config["hidden_size"], len(tokenizer)
    weights = load_file(str(folder / "model.safetensors"))
    for name, tensor in weights.items():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            weights[name] = torch.zeros_like(tensor)
    embed = weights["model.embed_tokens.weight"]
    grown = torch.zeros(vocab, width, dtype=embed.dtype)
    grown[: embed.shape[0]] = embed
    head = torch.zeros(vocab, width, dtype=embed.dtype)
    rows = _hadamard(width)
    for position, (current, following) in enumerate(itertools.pairwise(chain)):
        row = torch.tensor(rows[position + 1], dtype=embed.dtype)
        grown[current] = row
        head[following] = row * 10
    weights["model.embed_tokens.weight"] = grown
    weights["lm_head.weight"] = head
    weights["model.norm.weight"] = torch.ones_like(weights["model.norm.weight"])
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config.update(vocab_size=vocab, tie_word_embeddings=False)
    (folder / "config.json").write_text(json.dumps(config))
    return folder
