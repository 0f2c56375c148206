"""Preference objectives on a fixed batch against the papers' formulas, computed here
independently from full logits of plain transformers models; the chunked log-prob
gradients; the reference model without a second copy under LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.data.records import PreferenceRecord, Source
from tunesmith.data.render import Renderer
from tunesmith.errors import RecipeError
from tunesmith.model.adapters import apply_adapter
from tunesmith.recipe import AdapterConfig, PreferenceConfig
from tunesmith.train.logprobs import token_logprobs
from tunesmith.train.objectives.dpo import PreferenceObjective
from tunesmith.train.objectives.pairs import PairExample, collate_pairs
from tunesmith.train.objectives.sequences import collate_sequences

PAIRS = [
    ("Where is my parcel?", "It ships in 2 working days. Thanks for asking!", "Soon."),
    ("Can I return yarn?", "Yes, unused yarn within 30 days.", "No returns, sorry. Ask the shop."),
    ("Do you ship abroad?", "We ship to 30 countries.", "Maybe."),
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load_base(path: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture
def pairs(random_model_path: Path) -> list[PairExample]:
    renderer = Renderer(AutoTokenizer.from_pretrained(random_model_path))
    out = []
    for line, (question, chosen, rejected) in enumerate(PAIRS):
        record = PreferenceRecord([{"role": "user", "content": question}],
                                  [{"role": "assistant", "content": chosen}],
                                  [{"role": "assistant", "content": rejected}], Source("t.jsonl", line + 1))
        out.append(PairExample(*renderer.render_pair(record)))
    return out


def lora_policy(path: Path, kind: str = "lora") -> torch.nn.Module:
    """LoRA (or DoRA) on the base with non-zero adapter weights, so policy and reference differ."""
    torch.manual_seed(3)  # the adapter's own initialisation too, whatever ran before
    model = apply_adapter(load_base(path), AdapterConfig(kind=kind, dropout=0.0, rank=4))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    return model.eval()


def full_logps(model: torch.nn.Module, ids: list[int], mask: list[int]) -> tuple[torch.Tensor, int]:
    """Summed log p of the masked tokens from the model's full logits (one sequence, no packing)."""
    logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    keep = torch.tensor(mask[1:], dtype=torch.bool)
    return logp[keep].sum(), int(keep.sum())


def paper_values(config: PreferenceConfig, beta: float, policy: torch.nn.Module, base: torch.nn.Module,
                 pairs: list[PairExample]) -> dict[str, torch.Tensor]:
    losses, chosen_r, rejected_r = [], [], []
    for pair in pairs:
        (pc, nc), (pr, nr) = (full_logps(policy, side.input_ids, side.loss_mask)
                              for side in (pair.chosen, pair.rejected))
        with torch.no_grad():
            rc, _ = full_logps(base, pair.chosen.input_ids, pair.chosen.loss_mask)
            rr, _ = full_logps(base, pair.rejected.input_ids, pair.rejected.loss_mask)
        if config.loss == "simpo":  # Meng et al. 2024, eq. 6
            rew_c, rew_r = beta * pc / nc, beta * pr / nr
            z = rew_c - rew_r - config.simpo_gamma
            loss = -(1 - config.label_smoothing) * F.logsigmoid(z) - config.label_smoothing * F.logsigmoid(-z)
        else:
            rew_c, rew_r = beta * (pc - rc), beta * (pr - rr)
            if config.loss == "ipo":  # Azar et al. 2023, eq. 17, log-ratios averaged per token (as TRL)
                rew_c, rew_r = rew_c / nc, rew_r / nr
                loss = (((pc - rc) / nc - (pr - rr) / nr) - 1 / (2 * beta)) ** 2
            else:  # Rafailov et al. 2023, eq. 7, with conservative label smoothing
                z = rew_c - rew_r
                eps = config.label_smoothing
                loss = -(1 - eps) * torch.log(torch.sigmoid(z)) - eps * torch.log(torch.sigmoid(-z))
        losses.append(loss)
        chosen_r.append(rew_c.detach())
        rejected_r.append(rew_r.detach())
    chosen_t, rejected_t = torch.stack(chosen_r), torch.stack(rejected_r)
    return {"loss": torch.stack(losses).sum(), "chosen_reward": chosen_t.sum(),
            "rejected_reward": rejected_t.sum(), "reward_margin": (chosen_t - rejected_t).sum(),
            "reward_accuracy": (chosen_t > rejected_t).sum().float()}


@pytest.mark.parametrize("settings", [{"loss": "sigmoid", "label_smoothing": 0.1, "beta": 0.5},
                                      {"loss": "ipo", "beta": 0.3},
                                      {"loss": "simpo", "beta": 2.0, "simpo_gamma": 0.5,
                                       "label_smoothing": 0.05}])
def test_loss_metrics_and_gradients_match_the_papers(settings, random_model_path, pairs) -> None:
    config = PreferenceConfig(**settings)
    base = load_base(random_model_path)
    objective = PreferenceObjective(config)
    policy = lora_policy(random_model_path)
    objective.prepare(policy, None, [pairs], 4096, torch.device("cpu"))
    loss, metrics = objective(policy, collate_pairs(pairs))
    loss.backward()
    ours = {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}
    policy.zero_grad()
    expected = paper_values(config, settings["beta"], policy, base, pairs)
    expected["loss"].backward()
    assert loss.item() == pytest.approx(expected["loss"].item(), rel=1e-4, abs=1e-5)
    for key in ("chosen_reward", "rejected_reward", "reward_margin", "reward_accuracy"):
        assert metrics[key] == pytest.approx(expected[key].item(), rel=1e-4, abs=1e-4), key
    assert metrics["pairs"] == len(pairs)
    if settings["loss"] == "sigmoid":  # the fixed batch holds pairs ranked right and wrong
        assert 0 < expected["reward_accuracy"] < len(pairs)
    for name, param in policy.named_parameters():
        if param.requires_grad:  # float32 sums in another order: tolerance relative to the gradient's scale
            scale = float(param.grad.abs().max())
            torch.testing.assert_close(ours[name], param.grad, rtol=1e-3, atol=1e-4 * scale + 1e-7)


def test_token_logprobs_of_a_packed_row_and_their_gradients(random_model_path, pairs) -> None:
    """Full fine-tuning too: the head's (tied) weight gradient is recomputed in backward."""
    model = load_base(random_model_path)
    model.requires_grad_(True)
    sequences = [(s.input_ids, s.loss_mask) for p in pairs for s in (p.chosen, p.rejected)]
    batch = collate_sequences(sequences)
    weights = torch.linspace(-1, 2, int(batch.token_seq.numel()))
    logp = token_logprobs(model, batch.input_ids, batch.labels, batch.position_ids, chunk_tokens=7)
    (logp * weights).sum().backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    expected = []
    for ids, mask in sequences:
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        every = torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
        expected.append(every[torch.tensor(mask[1:], dtype=torch.bool)])
    expected_t = torch.cat(expected)
    (expected_t * weights).sum().backward()
    torch.testing.assert_close(logp.detach(), expected_t.detach(), rtol=1e-4, atol=1e-5)
    for name, param in model.named_parameters():
        scale = float(param.grad.abs().max())
        torch.testing.assert_close(ours[name], param.grad, rtol=1e-3, atol=1e-4 * scale + 1e-7)


def _embedding_storages(objective: PreferenceObjective, model: torch.nn.Module,
                        pairs: list[PairExample]) -> list[int]:
    """data_ptr of every token-embedding weight used while the objective runs."""
    seen: list[int] = []

    def hook(module: torch.nn.Module, args: object, output: object) -> None:
        if isinstance(module, torch.nn.Embedding):
            seen.append(module.weight.data_ptr())

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        objective(model, collate_pairs(pairs))
    finally:
        handle.remove()
    return seen


def test_lora_reference_is_the_base_without_a_second_copy(random_model_path, pairs) -> None:
    objective = PreferenceObjective(PreferenceConfig())
    model = lora_policy(random_model_path)
    objective.prepare(model, None, [pairs], 4096, torch.device("cpu"))
    assert objective.reference.frozen is None
    modules = [v for v in vars(objective).values() if isinstance(v, torch.nn.Module)]
    assert modules == []
    used = _embedding_storages(objective, model, pairs)
    assert len(used) == 2 and len(set(used)) == 1  # policy and reference passes, one set of weights

    full = load_base(random_model_path)
    full.requires_grad_(True)
    full_objective = PreferenceObjective(PreferenceConfig())
    full_objective.prepare(full, None, [pairs], 4096, torch.device("cpu"))
    used = _embedding_storages(full_objective, full, pairs)
    assert len(used) == 2 and len(set(used)) == 2  # full fine-tuning keeps a frozen copy


def test_precomputed_reference_gives_the_same_loss(random_model_path, pairs) -> None:
    live = PreferenceObjective(PreferenceConfig())
    model = lora_policy(random_model_path)
    live.prepare(model, None, [pairs], 4096, torch.device("cpu"))
    expected, _ = live(model, collate_pairs(pairs))
    stored = PreferenceObjective(PreferenceConfig(precompute_reference=True))
    stored.prepare(model, None, [pairs], 100, torch.device("cpu"))
    assert all(p.reference is not None for p in pairs)
    batch = collate_pairs(pairs)
    assert "reference" in batch.extra
    used = _embedding_storages(stored, model, pairs)
    assert len(used) == 1  # no reference pass during training
    loss, _ = stored(model, batch)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ipo_refuses_label_smoothing() -> None:
    with pytest.raises(RecipeError, match="label smoothing"):
        PreferenceObjective(PreferenceConfig(loss="ipo", label_smoothing=0.1))


@pytest.mark.parametrize("kind", ["lora", "dora"])
def test_reference_sees_through_wrappers_and_never_falls_back_silently(kind, random_model_path) -> None:
    from tunesmith.errors import ModelError
    from tunesmith.train.objectives.reference import Reference

    class Wrapper(torch.nn.Module):  # the shape of DistributedDataParallel: the model in .module
        def __init__(self, module: torch.nn.Module):
            super().__init__()
            self.module = module

    policy = lora_policy(random_model_path, kind)
    reference = Reference()
    reference.attach(Wrapper(policy))
    assert reference.frozen is None
    ids = torch.tensor([[5, 9, 100, 7]])
    base_logits = load_base(random_model_path)(input_ids=ids).logits
    with reference.use(Wrapper(policy)) as ref:
        assert ref is policy
        torch.testing.assert_close(ref(input_ids=ids).logits, base_logits)  # the adapter is off inside
    assert not torch.allclose(policy(input_ids=ids).logits, base_logits)
    with pytest.raises(ModelError, match="no reference model"), Reference().use(load_base(random_model_path)):
        pass


def test_methods_refuse_data_of_another_shape_naming_the_line(random_model_path) -> None:
    from tunesmith.data.records import ChatRecord, ReinforcementRecord
    from tunesmith.errors import DataError
    from tunesmith.recipe import ReinforcementConfig
    from tunesmith.train.objectives.grpo import GroupRelativeObjective
    from tunesmith.train.objectives.pairs import render_pair

    renderer = Renderer(AutoTokenizer.from_pretrained(random_model_path))
    chat = ChatRecord([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                      Source("chat.jsonl", 7))
    with pytest.raises(DataError) as caught:
        render_pair(renderer, chat, 512, "truncate")
    assert caught.value.where == "chat.jsonl:7" and "preference" in caught.value.fix
    grpo = GroupRelativeObjective(ReinforcementConfig(graders=[
        {"type": "string_check", "operation": "eq", "input": "{{sample.output_text}}", "reference": "x"}]))
    with pytest.raises(DataError) as caught:
        grpo.render_example(renderer, chat, 512, "truncate")
    assert caught.value.where == "chat.jsonl:7" and "data.format: reinforcement" in caught.value.fix
    prompt = ReinforcementRecord([{"role": "user", "content": "Hi " * 50}], Source("rl.jsonl", 2), {"x": 1})
    example, _ = grpo.render_example(renderer, prompt, 512, "truncate")
    assert example is not None and example.item == {"x": 1, "messages": prompt.messages}
    assert len(example) == 8 * (len(example.prompt_ids) + 64)
    assert grpo.render_example(renderer, prompt, 10, "truncate") == (None, False)  # overlong prompts drop


def test_ipo_averages_log_ratios_per_token_by_default() -> None:
    """The averaged form, against the formula written out by hand; summing would differ."""
    from tunesmith.train.objectives.dpo import preference_loss

    config = PreferenceConfig(loss="ipo")  # beta auto: 0.1
    policy = torch.tensor([-12.0, -30.0, -8.0, -9.0])     # chosen, rejected, chosen, rejected (summed)
    reference = torch.tensor([-14.0, -27.0, -8.5, -8.0])
    counts = torch.tensor([4.0, 10.0, 2.0, 3.0])
    losses, chosen, rejected = preference_loss(config, policy, reference, policy / counts, counts)
    h = [(-12 + 14) / 4 - (-30 + 27) / 10, (-8 + 8.5) / 2 - (-9 + 8) / 3]
    expected = [(value - 1 / (2 * 0.1)) ** 2 for value in h]
    assert losses.tolist() == pytest.approx(expected)
    assert chosen.tolist() == pytest.approx([0.1 * 2 / 4, 0.1 * 0.5 / 2])
    assert rejected.tolist() == pytest.approx([0.1 * -3 / 10, 0.1 * -1 / 3])
    summed = [((-12 + 14) - (-30 + 27) - 5) ** 2, ((-8 + 8.5) - (-9 + 8) - 5) ** 2]
    assert losses.tolist() != pytest.approx(summed)
