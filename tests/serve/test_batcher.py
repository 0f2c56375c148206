"""The server's inference cache and per-base batcher: concurrent requests on one base are
generated as one batch and each gets the reply it would get alone; rows of a base's LoRA
adapters and of the bare base share one batch (PEFT's mixed-adapter batches) while DoRA
adapters run in batches of their own; a request arriving while a batch decodes joins it at
the next step; waiting for one base's lock never holds up another base."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tunesmith.model import generation
from tunesmith.model.generation import Batch, Completion, Sampling, stop_token_ids
from tunesmith.serve.cache import InferenceCache, Target

ASK = [[{"role": "user", "content": q}] for q in ("Where is my order?", "How do I reset my password?",
                                                  "Can I return a gift?", "Do you ship abroad?")]
NAME = "tunesmith/tiny-chat"


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[list[tuple[Completion, str]]]:
    """Every step the batcher runs, as its rows (each with the adapter it runs with)."""
    seen: list[list[tuple[Completion, str]]] = []
    real = Batch.step

    def spy(self: Batch) -> None:
        seen.append(list(zip(self.rows, self.adapters, strict=True)))
        real(self)

    monkeypatch.setattr(Batch, "step", spy)
    return seen


def _sharing(steps: list[list[tuple[Completion, str]]], completions: list[Completion]) -> bool:
    """Whether some step ran all of `completions` together."""
    wanted = {id(c) for c in completions}
    return any(wanted <= {id(c) for c, _ in rows} for rows in steps)


def _alone(cache: InferenceCache, target: Target, messages: list, sampling: Sampling) -> list[int]:
    with cache.use(target) as loaded:
        completion = Completion(loaded.tokenizer, loaded.renderer.prompt_ids(messages), sampling)
        generation.run_batch(loaded.model, loaded.tokenizer, [completion])
    return completion.ids


def _submit_together(cache: InferenceCache, targets: list[Target], messages: list[list],
                     samplings: list[Sampling]) -> list[Completion]:
    """One request per thread, all released at once."""
    out: list[Completion | None] = [None] * len(targets)
    start = threading.Barrier(len(targets))

    def one(index: int) -> None:
        loaded = cache.loaded(targets[index])
        prompt = loaded.renderer.prompt_ids(messages[index])
        completion = Completion(loaded.tokenizer, prompt, samplings[index])
        start.wait()
        cache.submit(targets[index], [completion])
        out[index] = completion

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for completion in out:
        assert completion is not None
        completion.result(timeout=300)
    return [c for c in out if c is not None]


def test_concurrent_requests_share_one_batch_and_get_their_own_replies(steps) -> None:
    cache = InferenceCache(max_bases=1, device="cpu", window_seconds=1.0)
    base = Target(NAME, NAME)
    samplings = [Sampling(max_new_tokens=8), Sampling(max_new_tokens=12, temperature=1.2, seed=5),
                 Sampling(max_new_tokens=6), Sampling(max_new_tokens=10, temperature=0.8, seed=9)]
    done = _submit_together(cache, [base] * 4, ASK, samplings)
    assert len(steps[0]) == 4  # gathered within the window into one batch
    steps.clear()
    for completion, messages, sampling in zip(done, ASK, samplings, strict=True):
        assert completion.ids == _alone(cache, base, messages, sampling)
        assert completion.finish_reason in ("stop", "length")


def _adapter(folder: Path, base_path: Path, seed: int, dora: bool = False) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                        use_dora=dora)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def test_adapters_of_one_base_share_a_batch_and_reply_as_alone(steps, tmp_path, tiny_model_path) -> None:
    cache = InferenceCache(max_bases=1, device="cpu", window_seconds=1.0)
    targets = [Target(NAME, NAME),
               Target("tuned-a", NAME, str(_adapter(tmp_path / "a", tiny_model_path, 1)), "tuned-a"),
               Target("tuned-b", NAME, str(_adapter(tmp_path / "b", tiny_model_path, 2)), "tuned-b")]
    greedy = Sampling(max_new_tokens=10)
    done = _submit_together(cache, targets * 2, ASK[:3] * 2, [greedy] * 6)
    assert len(steps[0]) == 6  # one batch: the base's rows and both adapters' rows
    assert sorted(adapter for _, adapter in steps[0]) == ["__base__"] * 2 + ["tuned-a"] * 2 + ["tuned-b"] * 2
    steps.clear()
    # alone: each through PEFT's own adapter switching (set_adapter / disable_adapter), unmixed
    alone = [_alone(cache, t, m, greedy) for t, m in zip(targets, ASK[:3], strict=True)]
    assert [c.ids for c in done] == alone * 2
    assert len({tuple(ids) for ids in alone}) == 3  # the adapters really change the replies


def test_dora_adapters_fall_back_to_batches_of_their_own(steps, tmp_path, tiny_model_path) -> None:
    """PEFT refuses adapter_names with DoRA: its rows never share a step with other adapters'."""
    cache = InferenceCache(max_bases=1, device="cpu", window_seconds=1.0)
    targets = [Target("lora", NAME, str(_adapter(tmp_path / "l", tiny_model_path, 4)), "lora"),
               Target("dora", NAME, str(_adapter(tmp_path / "d", tiny_model_path, 5, dora=True)), "dora"),
               Target(NAME, NAME)]
    greedy = Sampling(max_new_tokens=10)
    done = _submit_together(cache, targets * 2, ASK[:3] * 2, [greedy] * 6)
    dora = {id(c) for c in done[1::3]}
    for rows in steps:
        ids = {id(c) for c, _ in rows}
        assert ids <= dora or not ids & dora  # DoRA rows alone, or none at all
    assert _sharing(steps, [done[0], done[2], done[3], done[5]])  # LoRA and base rows still mixed
    assert _sharing(steps, [done[1], done[4]])
    steps.clear()
    alone = [_alone(cache, t, m, greedy) for t, m in zip(targets, ASK[:3], strict=True)]
    assert [c.ids for c in done] == alone * 2
    assert len({tuple(ids) for ids in alone}) == 3


def _endless(loaded, messages: list, tokens: int) -> Completion:
    """A greedy reply held off every end-of-turn token, so it runs to its token limit."""
    stops = stop_token_ids(loaded.tokenizer, loaded.model)
    allowed = [t for t in range(len(loaded.tokenizer)) if t not in stops]
    return Completion(loaded.tokenizer, loaded.renderer.prompt_ids(messages), Sampling(max_new_tokens=tokens),
                      constraint=lambda ids: allowed)


def test_a_request_arriving_mid_batch_joins_at_the_next_step(steps) -> None:
    cache = InferenceCache(max_bases=1, device="cpu", window_seconds=0.0)
    base = Target(NAME, NAME)
    loaded = cache.loaded(base)
    long = _endless(loaded, ASK[0], 40)
    cache.submit(base, [long])
    deadline = time.monotonic() + 120
    while len(long.ids) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    late = Completion(loaded.tokenizer, loaded.renderer.prompt_ids(ASK[1]), Sampling(max_new_tokens=8))
    cache.submit(base, [late])
    late.result(timeout=300)
    long.result(timeout=300)
    assert _sharing(steps, [long, late])  # decoded together, not one batch after the other
    assert long.completion_tokens == 40
    steps.clear()
    assert late.ids == _alone(cache, base, ASK[1], Sampling(max_new_tokens=8))
    with cache.use(base) as alone:
        again = _endless(alone, ASK[0], 40)
        generation.run_batch(alone.model, alone.tokenizer, [again])
    assert long.ids == again.ids  # joining left the running row's reply as it was


def test_an_adapter_loads_between_steps_of_a_running_batch(tmp_path, tiny_model_path) -> None:
    cache = InferenceCache(max_bases=1, device="cpu", window_seconds=0.0)
    base = Target(NAME, NAME)
    long = _endless(cache.loaded(base), ASK[0], 900)
    cache.submit(base, [long])
    while not long.ids:
        time.sleep(0.01)
    tuned = Target("tuned", NAME, str(_adapter(tmp_path / "a", tiny_model_path, 6)), "tuned")
    try:
        cache.loaded(tuned)  # needs the base's lock: had between two steps
        assert not long.done.is_set()  # the batch had not ended (900 tokens take far longer)
        reply = Completion(cache.loaded(tuned).tokenizer, long.prompt_ids, Sampling(max_new_tokens=6))
        cache.submit(tuned, [reply])  # and its requests join the running batch
        reply.result(timeout=300)
        assert not long.done.is_set()
    finally:
        long.cancel()
    long.result(timeout=300)
    assert long.finish_reason == "stop" and len(long.ids) < 900


def test_waiting_for_one_base_never_holds_up_another(tmp_path, tiny_model_path) -> None:
    cache = InferenceCache(max_bases=2, device="cpu")
    first = Target("tunesmith/tiny-chat", "tunesmith/tiny-chat")
    second = Target("other", str(tiny_model_path))
    cache.loaded(first)
    cache.loaded(second)
    adapter = Target("tuned", first.base, str(_adapter(tmp_path / "a", tiny_model_path, 3)), "tuned")
    busy = cache._bases[first.base].lock
    busy.acquire()  # a batch running on the first base
    try:
        waiting = threading.Thread(target=cache.loaded, args=(adapter,), daemon=True)
        waiting.start()  # needs the first base's lock to load its adapter: waits
        other = threading.Thread(target=cache.loaded, args=(second,), daemon=True)
        other.start()
        other.join(timeout=60)  # only a real stall (the old global lock) reaches this ceiling
        assert not other.is_alive()
        assert waiting.is_alive()
    finally:
        busy.release()
    waiting.join(timeout=120)
    assert not waiting.is_alive() and "tuned" in cache._bases[first.base].adapters


def test_bases_requested_at_once_all_load_with_their_weights(tmp_path, tiny_model_path) -> None:
    """Chat panes asking for different bases at the same moment: transformers' model building is
    process-wide state, so loads must take turns or a model ends up on the meta device."""
    folders = []
    for name in ("a", "b", "c"):  # three bases by name, one model on disk
        (tmp_path / name).symlink_to(tiny_model_path, target_is_directory=True)
        folders.append(str(tmp_path / name))
    cache = InferenceCache(max_bases=3, device="cpu")
    errors: list[BaseException] = []

    def load(folder: str) -> None:
        try:
            cache.loaded(Target(folder, folder))
        except BaseException as error:  # the failure is the finding
            errors.append(error)

    threads = [threading.Thread(target=load, args=(folder,)) for folder in folders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert sorted(cache.loaded_bases()) == folders
    devices = {p.device.type for f in folders for p in cache._bases[f].model.parameters()}
    assert devices == {"cpu"}
