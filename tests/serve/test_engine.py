"""The engine process: what it generates equals what the same batch generates here, a cancel
reaches it, and requests in flight when it dies fail (the next request starts another)."""

from __future__ import annotations

import pytest

from tunesmith.model.generation import Completion, Sampling
from tunesmith.serve.cache import InferenceCache, Target
from tunesmith.serve.engine import EngineClient, engine_threads, portable

TINY = Target("tunesmith/tiny-chat", "tunesmith/tiny-chat")


def _completions(loaded: object, n: int, tokens: int) -> list[Completion]:
    ids = loaded.renderer.prompt_ids([{"role": "user", "content": "hello"}], None)  # type: ignore[attr-defined]
    return [Completion(loaded.tokenizer, ids, Sampling(tokens, 0.0, 1.0, (), None))  # type: ignore[attr-defined]
            for _ in range(n)]


@pytest.fixture
def engine() -> object:
    client = EngineClient()
    yield client
    client.close()


def test_the_engine_generates_what_the_same_batch_generates_here(engine: EngineClient) -> None:
    remote = _completions(engine.loaded(TINY), 3, 12)
    engine.submit(TINY, remote)
    here = InferenceCache(device="cpu", dtype="float32")
    local = _completions(here.loaded(TINY), 3, 12)
    here.submit(TINY, local)
    for theirs, ours in zip(remote, local, strict=True):
        assert theirs.result(timeout=120) == ours.result(timeout=120)
        assert (theirs.ids, theirs.finish_reason) == (ours.ids, ours.finish_reason)
        assert list(theirs) == list(ours)  # the same pieces, streamed


def test_a_cancel_reaches_the_engine(engine: EngineClient) -> None:
    [reply] = _completions(engine.loaded(TINY), 1, 100_000)
    engine.submit(TINY, [reply])
    next(iter(reply))  # generating
    reply.cancel()
    reply.result(timeout=60)  # ended by the engine, not by its token limit
    assert reply.finish_reason == "stop" and len(reply.ids) < 100_000


def test_a_dead_engine_fails_its_requests_and_the_next_request_starts_another(engine: EngineClient) -> None:
    [reply] = _completions(engine.loaded(TINY), 1, 100_000)
    engine.submit(TINY, [reply])
    next(iter(reply))
    engine._engine._process.kill()  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="generation process ended"):
        reply.result(timeout=60)
    [again] = _completions(engine.loaded(TINY), 1, 4)
    engine.submit(TINY, [again])
    again.result(timeout=120)
    assert again.finish_reason in {"stop", "length"}


def test_closing_ends_the_engine_at_once() -> None:
    client = EngineClient()
    [reply] = _completions(client.loaded(TINY), 1, 4)
    client.submit(TINY, [reply])
    reply.result(timeout=120)
    process = client._engine._process  # type: ignore[union-attr]
    client.close()
    assert process.exitcode == 0  # it stopped when asked, not killed after the wait


def test_a_failure_that_cannot_cross_the_pipe_crosses_as_its_text() -> None:
    class Unpicklable(Exception):
        def __init__(self, a: str, b: str):
            super().__init__(a)

    sent = portable(Unpicklable("the weights are gone", "x"))
    assert isinstance(sent, RuntimeError) and "Unpicklable: the weights are gone" in str(sent)
    assert isinstance(portable(ValueError("kept")), ValueError)


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (16, 15)])
def test_the_engine_leaves_one_core_to_the_server(monkeypatch: pytest.MonkeyPatch, cores: int,
                                                  threads: int) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert engine_threads() == threads
    assert engine_threads(4) == 4  # `tunesmith serve --engine-threads 4`
