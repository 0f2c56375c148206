"""Replayed examples are trained towards the base model's distribution (KL(base || model) on
their trained tokens) while the task's examples keep cross-entropy on their labels, in the same
packed row: the fused loss and its gradients equal autograd's on full logits, the base's states
come from a row cut to the replayed examples, and at the start (adapter still zero) replay
costs nothing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tests.unit.test_pack import tiny_llama
from tests.unit.test_shared_prefix import PREFIX, prompted_examples
from tunesmith.data.pack import collate_packed
from tunesmith.data.render import RenderedExample
from tunesmith.train.loss import _LinearCrossEntropy, teacher_states, token_loss
from tunesmith.train.objectives.base import summarise_tokens
from tunesmith.train.objectives.sft import SupervisedObjective


def mixed_examples(seed: int) -> list[RenderedExample]:
    """Task and replayed examples interleaved, all after the same system prompt."""
    return [dataclasses.replace(e, distill=index % 3 == 1)
            for index, e in enumerate(prompted_examples(7, seed=seed))]


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_the_fused_kl_and_its_gradients_equal_autograd(softcap: float | None) -> None:
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(11, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(40, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(40, dtype=torch.float64, generator=generator, requires_grad=True)
    teacher = (torch.randn(11, 8, dtype=torch.float64, generator=generator),
               torch.randn(40, 8, dtype=torch.float64, generator=generator), None)

    def capped(logits: torch.Tensor) -> torch.Tensor:
        return torch.tanh(logits / softcap) * softcap if softcap else logits

    want_log_probs = F.log_softmax(capped(teacher[0] @ teacher[1].t()), dim=-1)
    expected = F.kl_div(F.log_softmax(capped(hidden @ weight.t() + bias), dim=-1), want_log_probs,
                        log_target=True, reduction="sum")
    expected_grads = torch.autograd.grad(expected, (hidden, weight, bias))
    # chunks of 4 tokens: the loop over chunks is exercised too
    got, correct = _LinearCrossEntropy.apply(hidden, weight, bias, None, softcap, 4, True, None, teacher)
    assert int(correct) == 0
    got_grads = torch.autograd.grad(got, (hidden, weight, bias))
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-6)
    for ours, theirs in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def _one_by_one(student: torch.nn.Module, teacher: torch.nn.Module,
                examples: list[RenderedExample]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Cross-entropy of task examples and KL of replayed ones, each example alone, from the
    models' full logits: the reference the packed, fused computation must equal."""
    ce = kl = torch.zeros((), dtype=torch.float64)
    tokens = distilled = 0
    for example in examples:
        ids = torch.tensor([example.input_ids])
        trained = torch.tensor(example.loss_mask[1:], dtype=torch.bool)
        logits = student(input_ids=ids).logits[0, :-1][trained]
        if example.distill:
            with torch.no_grad():
                base = teacher(input_ids=ids).logits[0, :-1][trained]
            kl = kl + F.kl_div(F.log_softmax(logits, -1), F.log_softmax(base, -1), log_target=True,
                               reduction="sum")
            distilled += int(trained.sum())
        else:
            ce = ce + F.cross_entropy(logits, ids[0, 1:][trained], reduction="sum")
            tokens += int(trained.sum())
    return ce, kl, tokens, distilled


@pytest.mark.parametrize("share_prefix", [True, False])
def test_a_mixed_row_gives_cross_entropy_on_the_task_and_kl_on_replay(share_prefix: bool) -> None:
    student = tiny_llama("sdpa").double().train()
    teacher = tiny_llama("sdpa").double()
    with torch.no_grad():
        for p in teacher.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # a different model than the student
    examples = mixed_examples(seed=4)
    batch = collate_packed(examples, share_prefix=share_prefix)
    assert bool(batch.shared_prefix) == share_prefix and batch.distill is not None
    with torch.no_grad():
        states = teacher_states(teacher, batch)
    out = token_loss(student, batch.input_ids, batch.labels, batch.position_ids, chunk_tokens=5,
                     shared_prefix=batch.shared_prefix, distill=batch.distill, teacher=states)
    ours = torch.autograd.grad(out.loss_sum + out.kl_sum, list(student.parameters()))
    ce, kl, tokens, distilled = _one_by_one(student, teacher, examples)
    theirs = torch.autograd.grad(ce + kl, list(student.parameters()))
    assert (out.tokens, out.distilled) == (tokens, distilled) and tokens and distilled
    # float64 models; the fused loss takes its softmax in float32, hence the tolerances
    torch.testing.assert_close(out.loss_sum.double(), ce, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.kl_sum.double(), kl, rtol=1e-5, atol=1e-6)
    for got, want in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_the_base_sees_only_the_replayed_examples_and_the_prefix() -> None:
    examples = mixed_examples(seed=5)
    batch = collate_packed(examples, share_prefix=True)
    part = batch.distilled_only()
    alone = collate_packed([e for e in examples if e.distill], share_prefix=True)
    assert part.shared_prefix == alone.shared_prefix >= len(PREFIX)
    assert part.num_examples == alone.num_examples == 2
    for key in ("input_ids", "position_ids", "labels", "distill"):
        assert torch.equal(getattr(part, key), getattr(alone, key)), key
    assert batch.unshared().distill is not None
    assert int(batch.unshared().distill.sum()) == int(batch.distill.sum())
    assert collate_packed(prompted_examples(3)).distill is None  # no replay, no mask


def test_replay_costs_nothing_while_the_adapter_is_still_zero() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_llama("sdpa"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    objective = SupervisedObjective(chunk_tokens=5)
    examples = mixed_examples(seed=6)
    objective.prepare(model, None, [examples], 512, torch.device("cpu"))
    assert objective.reference.frozen is None  # the base is the model with its adapter off
    replayed = objective.collate([e for e in examples if e.distill])
    loss, metrics = objective(model, replayed)
    assert metrics["replay_tokens"] > 0 and metrics["tokens"] == 0
    assert abs(float(loss.detach())) < 1e-5  # the model still is the base: KL 0
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(float(g.abs().max()) < 1e-5 for g in grads)

    # A task example in the same row is still trained on its labels, and reported apart.
    loss, metrics = objective(model, objective.collate(examples))
    summary = summarise_tokens(metrics)
    assert metrics["loss"] > 0 and abs(float(loss.detach()) - metrics["loss"] - metrics["replay_kl"]) < 1e-4
    assert summary["tokens"] == metrics["tokens"] + metrics["replay_tokens"]
    assert summary["loss"] == metrics["loss"] / metrics["tokens"] and "replay_kl" in summary


def test_replayed_and_task_examples_are_packed_apart_and_share_their_own_prefix() -> None:
    from tunesmith.data.pack import pack_groups, plan_epoch

    examples = mixed_examples(seed=7) + mixed_examples(seed=8)
    groups = pack_groups(examples)
    assert groups == [int(e.distill) for e in examples] and any(groups)
    assert pack_groups(prompted_examples(4)) is None  # no replay: packed as before
    lengths = [len(e) for e in examples]
    plan = plan_epoch(lengths, batch_size=6, budget=4096, seed=0, epoch=0, groups=groups)
    assert sorted(i for step in plan for micro in step for i in micro) == list(range(len(examples)))
    assert plan == plan_epoch(lengths, batch_size=6, budget=4096, seed=0, epoch=0, groups=groups)
    mixed = 0
    for step in plan:
        kinds = [{examples[i].distill for i in micro} for micro in step]
        assert all(len(k) == 1 for k in kinds)  # never a replayed and a task example in one row
        mixed += len(kinds) == 2
    assert mixed  # a step with both kinds holds one row of each
