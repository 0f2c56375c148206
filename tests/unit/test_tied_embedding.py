"""A tied input embedding's gradient rows are added in place to the head's gradient on a CPU
(train/loss.py `_tied_embedding_lookup`); every gradient must equal the model's own lookup,
padding row, accumulation over micro-batches and bf16 autocast included."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunesmith.train import loss as loss_module
from tunesmith.train.loss import token_loss

PAD = 0


def tied_llama(tied: bool = True) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=PAD, tie_word_embeddings=tied)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config)


def micro_batches() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Two packed rows of two examples each; the first holds the padding id as an input."""
    generator = torch.Generator().manual_seed(1)
    rows = []
    for lengths in ([7, 9], [5, 12]):
        ids = torch.randint(1, 96, (1, sum(lengths)), generator=generator)
        ids[0, 2] = PAD
        labels = ids.clone()
        labels[0, :3] = -100
        positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
        rows.append((ids, labels, positions))
    return rows


def gradients(model: torch.nn.Module, lookup_in_place: bool,
              autocast: bool = False) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    original = loss_module._tied_embedding_lookup
    calls = []

    def spy(lm: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor | None:
        embedded = original(lm, ids) if lookup_in_place else None
        calls.append(embedded is not None)
        return embedded

    loss_module._tied_embedding_lookup = spy
    try:
        for ids, labels, positions in micro_batches():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                result = token_loss(model, ids, labels, positions)
            (result.loss_sum / 3.0).backward()
    finally:
        loss_module._tied_embedding_lookup = original
    assert calls == [lookup_in_place] * 2
    return {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("autocast", [False, True])
def test_in_place_rows_give_the_models_own_gradients(autocast: bool) -> None:
    model = tied_llama()
    expected = gradients(model, lookup_in_place=False, autocast=autocast)
    got = gradients(model, lookup_in_place=True, autocast=autocast)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)
    embedding = expected["model.embed_tokens.weight"]
    assert embedding.abs().sum() > 0


def test_the_padding_row_gets_only_the_heads_gradient() -> None:
    model = tied_llama()
    in_place = gradients(model, lookup_in_place=True)["model.embed_tokens.weight"]
    model.zero_grad(set_to_none=True)
    ids, _, positions = micro_batches()[0]
    hidden = loss_module.hidden_states(model, ids, positions)
    hidden.sum().backward()  # the embedding's rows alone (the head is not in this graph)
    rows = model.model.embed_tokens.weight.grad
    assert rows[PAD].abs().sum() == 0 and rows[ids[0, 0]].abs().sum() > 0
    assert in_place[PAD].abs().sum() > 0  # the head's gradient for the padding id is kept


def test_untied_frozen_or_gradient_free_lookups_are_the_models_own() -> None:
    untied = tied_llama(tied=False)
    ids = torch.randint(1, 96, (1, 8))
    assert loss_module._tied_embedding_lookup(untied, ids) is None
    tied = tied_llama()
    with torch.no_grad():
        assert loss_module._tied_embedding_lookup(tied, ids) is None
    tied.model.embed_tokens.weight.requires_grad_(False)
    assert loss_module._tied_embedding_lookup(tied, ids) is None


def test_a_hooked_embedding_is_called_as_a_module() -> None:
    """A hook on the embedding (transformers' enable_input_require_grads, a user's probe) must see
    the lookup, so the module itself runs."""
    model = tied_llama()
    ids = torch.randint(1, 96, (1, 8))
    seen = []
    handle = model.model.embed_tokens.register_forward_hook(lambda module, args, out: seen.append(out))
    try:
        assert loss_module._tied_embedding_lookup(model, ids) is None
        loss_module.hidden_states(model, ids, torch.arange(8).unsqueeze(0))
    finally:
        handle.remove()
    assert len(seen) == 1
    assert loss_module._tied_embedding_lookup(model, ids) is not None
