"""Packing: plans are deterministic, micro-batches respect the budget, and a packed row
gives exactly the loss of the same examples padded (attention never crosses examples)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunesmith.data.pack import (
    IGNORE_INDEX,
    collate_packed,
    collate_padded,
    pack_indices,
    packing_stats,
    plan_epoch,
)
from tunesmith.data.records import Source
from tunesmith.data.render import RenderedExample
from tunesmith.errors import DataError
from tunesmith.train.loss import token_loss


def random_examples(count: int, seed: int = 0, vocab: int = 96) -> list[RenderedExample]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(count):
        length = int(torch.randint(4, 40, (1,), generator=generator))
        ids = torch.randint(3, vocab, (length,), generator=generator).tolist()
        prompt = int(torch.randint(1, length - 1, (1,), generator=generator))
        mask = [0] * prompt + [1] * (length - prompt)
        examples.append(RenderedExample(ids, mask, Source("mem", index + 1)))
    return examples


def tiny_llama(attn: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    config._attn_implementation = attn
    return LlamaForCausalLM(config).eval()


def test_plan_is_seeded_and_covers_every_example_once() -> None:
    lengths = [len(e) for e in random_examples(37)]
    plan = plan_epoch(lengths, batch_size=8, budget=64, seed=3, epoch=0)
    assert plan == plan_epoch(lengths, batch_size=8, budget=64, seed=3, epoch=0)
    assert plan != plan_epoch(lengths, batch_size=8, budget=64, seed=3, epoch=1)
    flat = [i for step in plan for micro in step for i in micro]
    assert sorted(flat) == list(range(37))
    assert len(plan) == 5  # ceil(37 / 8)
    for step in plan:
        assert sum(len(micro) for micro in step) <= 8
        for micro in step:
            assert sum(lengths[i] for i in micro) <= 64


def test_pack_rejects_example_longer_than_budget() -> None:
    with pytest.raises(DataError, match="micro_batch_tokens"):
        pack_indices([0, 1], [10, 100], budget=50)


def test_collate_restarts_positions_and_masks_labels() -> None:
    examples = random_examples(3)
    batch = collate_packed(examples)
    starts = [0]
    for e in examples[:-1]:
        starts.append(starts[-1] + len(e))
    assert batch.input_ids.shape == (1, sum(len(e) for e in examples))
    for start, example in zip(starts, examples, strict=True):
        assert batch.position_ids[0, start : start + len(example)].tolist() == list(range(len(example)))
        labels = batch.labels[0, start : start + len(example)].tolist()
        assert [label != IGNORE_INDEX for label in labels] == [bool(m) for m in example.loss_mask]
    assert batch.num_trained == sum(e.trained_tokens for e in examples)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_padded_loss(attn: str) -> None:
    model = tiny_llama(attn)
    examples = random_examples(6, seed=1)
    with torch.no_grad():
        packed = collate_packed(examples)
        packed_loss = token_loss(model, packed.input_ids, packed.labels, packed.position_ids)
        padded = collate_padded(examples, pad_id=0)
        padded_loss = token_loss(
            model, padded["input_ids"], padded["labels"], attention_mask=padded["attention_mask"]
        )
        # Reference: every example alone, through the model's own forward and loss.
        alone = sum(
            model(input_ids=torch.tensor([e.input_ids]), labels=collate_padded([e], 0)["labels"]).loss
            * (e.trained_tokens - e.loss_mask[0])
            for e in examples
        )
    assert packed_loss.tokens == padded_loss.tokens == sum(e.trained_tokens for e in examples)
    assert torch.allclose(packed_loss.loss_sum, padded_loss.loss_sum, atol=1e-5, rtol=1e-5)
    assert torch.allclose(packed_loss.loss_sum, alone, atol=1e-4, rtol=1e-5)
    assert int(packed_loss.correct) == int(padded_loss.correct)


def test_packed_logits_do_not_see_other_examples() -> None:
    model = tiny_llama("sdpa")
    first, second = random_examples(2, seed=5)
    with torch.no_grad():
        packed = collate_packed([first, second])
        # transformers only splits a packed row when no KV cache is built: use_cache=False.
        logits = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits
        alone = model(input_ids=torch.tensor([second.input_ids])).logits
    assert torch.allclose(logits[0, len(first) :], alone[0], atol=1e-5)


def test_chunked_loss_matches_single_chunk_with_gradients() -> None:
    model = tiny_llama("sdpa").train()
    batch = collate_packed(random_examples(4, seed=2))
    whole = token_loss(model, batch.input_ids, batch.labels, batch.position_ids, chunk_tokens=10_000)
    whole.loss_sum.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    chunked = token_loss(model, batch.input_ids, batch.labels, batch.position_ids, chunk_tokens=7)
    chunked.loss_sum.backward()
    assert torch.allclose(whole.loss_sum, chunked.loss_sum, atol=1e-5)
    for expected, param in zip(grads, model.parameters(), strict=True):
        assert torch.allclose(expected, param.grad, atol=1e-5)


def test_packing_stats_show_padding_waste() -> None:
    lengths = [10, 100] * 20
    stats = packing_stats(lengths, batch_size=8, budget=400)
    assert stats.padded_waste > 0.3  # short rows padded to the long ones
    assert 0 < stats.packed_fill <= 1
    assert stats.micro_batches_packed <= stats.micro_batches_padded


def test_a_short_bf16_example_attends_in_fp32_on_a_cpu_and_a_long_one_in_bf16(monkeypatch) -> None:
    """bf16 SDPA is the slower on a CPU for short examples (train/loss.CPU_FP32_ATTENTION_BELOW):
    those attend in fp32 and come back in bf16, with the packed row's same logits and gradients
    flowing in bf16; a long example keeps bf16 attention."""
    import tunesmith.train.loss as loss_module

    seen: list[torch.dtype] = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def recording(query, *args, **kwargs):
        seen.append(query.dtype)
        return real_sdpa(query, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    model = tiny_llama("sdpa").to(torch.bfloat16).train()
    batch = collate_packed(random_examples(3, seed=4))
    upcast = token_loss(model, batch.input_ids, batch.labels, batch.position_ids)
    upcast.loss_sum.backward()
    assert seen and set(seen) == {torch.float32}  # every example of every layer
    grads = [p.grad.clone() for p in model.parameters()]
    assert all(g.dtype == torch.bfloat16 for g in grads)

    seen.clear()
    model.zero_grad()
    monkeypatch.setattr(loss_module, "CPU_FP32_ATTENTION_BELOW", 1)  # every example counts as long
    native = token_loss(model, batch.input_ids, batch.labels, batch.position_ids)
    native.loss_sum.backward()
    assert set(seen) == {torch.bfloat16}
    assert torch.allclose(upcast.loss_sum.float(), native.loss_sum.float(), rtol=2e-2)
    for ours, theirs in zip(grads, (p.grad for p in model.parameters()), strict=True):
        assert torch.allclose(ours.float(), theirs.float(), atol=5e-2, rtol=5e-2)
