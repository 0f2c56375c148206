"""The server's inference cache and per-base batcher: concurrent requests on one base are
generated as one batch and each gets the reply it would get alone; adapters of one base run
in batches of their own; waiting for one base's lock never holds up another base."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tunesmith.model import generation
from tunesmith.model.generation import Completion, Sampling
from tunesmith.serve.cache import InferenceCache, Target

ASK = [[{"role": "user", "content": q}] for q in ("Where is my order?", "How do I reset my password?",
                                                  "Can I return a gift?", "Do you ship abroad?")]


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[list[Completion]]:
    """Every batch the engine runs, as the list of its rows."""
    seen: list[list[Completion]] = []
    real = generation.run_batch

    def spy(model, tokenizer, completions, stop_ids=None):
        seen.append(list(completions))
        return real(model, tokenizer, completions, stop_ids)

    monkeypatch.setattr("tunesmith.serve.batcher.run_batch", spy)
    return seen


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


def test_concurrent_requests_share_one_batch_and_get_their_own_replies(batches) -> None:
    cache = InferenceCache(max_bases=1, device="cpu", window_seconds=1.0)
    base = Target("tunesmith/tiny-chat", "tunesmith/tiny-chat")
    samplings = [Sampling(max_new_tokens=8), Sampling(max_new_tokens=12, temperature=1.2, seed=5),
                 Sampling(max_new_tokens=6), Sampling(max_new_tokens=10, temperature=0.8, seed=9)]
    done = _submit_together(cache, [base] * 4, ASK, samplings)
    assert [len(b) for b in batches] == [4]  # gathered within the window into one batch
    batches.clear()
    for completion, messages, sampling in zip(done, ASK, samplings, strict=True):
        assert completion.ids == _alone(cache, base, messages, sampling)
        assert completion.finish_reason in ("stop", "length")


def _adapter(folder: Path, base_path: Path, seed: int) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def test_adapters_of_one_base_run_in_batches_of_their_own(batches, tmp_path, tiny_model_path) -> None:
    cache = InferenceCache(max_bases=1, device="cpu", window_seconds=1.0)
    name = "tunesmith/tiny-chat"
    targets = [Target(name, name),
               Target("tuned-a", name, str(_adapter(tmp_path / "a", tiny_model_path, 1)), "tuned-a"),
               Target("tuned-b", name, str(_adapter(tmp_path / "b", tiny_model_path, 2)), "tuned-b")]
    greedy = Sampling(max_new_tokens=10)
    done = _submit_together(cache, targets * 2, ASK[:3] * 2, [greedy] * 6)
    assert sorted(len(b) for b in batches) == [2, 2, 2]  # one batch per adapter (and the base)
    for batch in batches:  # each batch holds one target's rows: the same prompt twice here
        assert len({tuple(c.prompt_ids) for c in batch}) == 1
    batches.clear()
    alone = [_alone(cache, t, m, greedy) for t, m in zip(targets, ASK[:3], strict=True)]
    assert [c.ids for c in done] == alone * 2
    assert len({tuple(ids) for ids in alone}) == 3  # the adapters really change the replies


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
