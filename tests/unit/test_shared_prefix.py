"""A shared untrained prefix (a common system prompt) is held once in a packed row and every
example attends to it: the loss, the token accuracy and every gradient equal those of the
plain packed row, where the prefix is computed once per example."""

from __future__ import annotations

import pytest
import torch

from tests.unit.test_pack import tiny_llama
from tunesmith.data.pack import SHARED_PREFIX_MIN, collate_packed, common_prefix
from tunesmith.data.records import Source
from tunesmith.data.render import RenderedExample
from tunesmith.train.loss import shares_prefix, token_loss
from tunesmith.train.objectives.sft import SupervisedObjective

PREFIX = [5, 17, 9, 33, 41, 8, 60, 12, 70, 3, 22]  # a system prompt, 11 tokens


def prompted_examples(count: int, seed: int = 0, prefix: list[int] = PREFIX) -> list[RenderedExample]:
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for index in range(count):
        question = torch.randint(3, 96, (int(torch.randint(2, 9, (1,), generator=generator)),),
                                 generator=generator).tolist()
        reply = torch.randint(3, 96, (int(torch.randint(1, 7, (1,), generator=generator)),),
                              generator=generator).tolist()
        ids = prefix + question + reply
        mask = [0] * (len(prefix) + len(question)) + [1] * len(reply)
        examples.append(RenderedExample(ids, mask, Source("mem", index + 1)))
    return examples


def test_the_common_untrained_prefix_is_found() -> None:
    examples = prompted_examples(4)
    assert common_prefix(examples) >= len(PREFIX)
    assert common_prefix(examples[:1]) == 0  # nothing to share with one example
    short = prompted_examples(3, prefix=PREFIX[: SHARED_PREFIX_MIN - 1])
    for index, example in enumerate(short):
        example.input_ids[SHARED_PREFIX_MIN - 1] = 90 + index  # the questions differ at once
    assert common_prefix(short) == 0  # too short to be worth it
    trained = prompted_examples(3)
    trained[1].loss_mask[4] = 1  # a trained token inside the prefix: it is counted per example
    assert common_prefix(trained) == 0  # 4 < SHARED_PREFIX_MIN


def test_a_shared_row_holds_the_prefix_once_and_unshares_to_the_plain_row() -> None:
    examples = prompted_examples(5, seed=1)
    shared = collate_packed(examples, share_prefix=True)
    plain = collate_packed(examples)
    prefix = shared.shared_prefix
    assert prefix >= len(PREFIX)
    assert shared.input_ids.shape[1] == plain.input_ids.shape[1] - 4 * prefix
    assert shared.num_tokens == plain.num_tokens and shared.num_trained == plain.num_trained
    back = shared.unshared()
    for got, want in ((back.input_ids, plain.input_ids), (back.position_ids, plain.position_ids),
                      (back.labels, plain.labels)):
        assert torch.equal(got, want)


def _loss_and_grads(model: torch.nn.Module, batch, shared_prefix: int):
    model.zero_grad()
    out = token_loss(model, batch.input_ids, batch.labels, batch.position_ids, chunk_tokens=5,
                     shared_prefix=shared_prefix)
    out.loss_sum.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_shared_prefix_loss_and_gradients_equal_the_plain_row() -> None:
    model = tiny_llama("sdpa").train().double()
    assert shares_prefix(model)
    # The last example is trained from its first token after the prefix, which is predicted
    # from the prefix's last position (not from the end of the example before it in the row).
    examples = [*prompted_examples(6, seed=2),
                RenderedExample([*PREFIX, 50, 51, 52], [0] * len(PREFIX) + [1, 1, 1], Source("mem", 7))]
    shared = collate_packed(examples, share_prefix=True)
    assert shared.shared_prefix
    ours, our_grads = _loss_and_grads(model, shared, shared.shared_prefix)
    theirs, their_grads = _loss_and_grads(model, collate_packed(examples), 0)
    assert ours.tokens == theirs.tokens == sum(e.trained_tokens for e in examples)
    assert int(ours.correct) == int(theirs.correct)
    # float64 model; the fused loss takes its softmax in float32, hence the tolerances
    torch.testing.assert_close(ours.loss_sum, theirs.loss_sum, rtol=1e-7, atol=1e-7)
    assert our_grads.keys() == their_grads.keys() and our_grads
    for name, grad in their_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-6, atol=1e-6, msg=name)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_objective_shares_only_where_the_model_can_take_it(attn: str) -> None:
    model = tiny_llama(attn)
    examples = prompted_examples(4, seed=3)
    objective = SupervisedObjective()
    batch = objective.collate(examples)
    assert batch.shared_prefix  # collation does not know the model
    assert shares_prefix(model) == (attn == "sdpa")
    with torch.no_grad():
        loss, metrics = objective(model, batch)
        plain = token_loss(model, *(getattr(collate_packed(examples), k)
                                    for k in ("input_ids", "labels", "position_ids")))
    torch.testing.assert_close(loss, plain.loss_sum, rtol=1e-5, atol=1e-5)
    assert metrics["tokens"] == plain.tokens
