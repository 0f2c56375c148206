"""The one generation engine (tunesmith.model.generation): batched left-padded greedy output
equals one-by-one output; seeded sampling repeats in a batch, whatever shares the batch, and
under concurrency; stop sequences, end-of-turn tokens, token limits and cancel; GRPO and
evaluation generate through it."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
import torch

from tunesmith.model import generation
from tunesmith.model.generation import (
    Completion,
    Sampling,
    generate,
    generate_ids,
    run_batch,
    stop_token_ids,
    stream,
)
from tunesmith.model.inference import load_trained

QUESTIONS = ["Where is my order BL-12345?", "How do I reset my password?",
             "Can I return a skein of yarn I bought last week because the colour is not what I expected?"]


@pytest.fixture(scope="module")
def loaded(tiny_model_path):
    return load_trained(str(tiny_model_path))


def conversations():
    return [[{"role": "system", "content": "You are Wren, Brightloom's support assistant."},
             {"role": "user", "content": q}] for q in QUESTIONS]


def texts(groups: list[list[Completion]]) -> list[list[str]]:
    return [[c.result() for c in group] for group in groups]


def test_batched_greedy_matches_one_by_one(loaded) -> None:
    batched = generate(loaded, conversations(), Sampling(max_new_tokens=16))
    assert [len(r) for r in batched] == [1, 1, 1]
    single = ["".join(stream(loaded, c, Sampling(max_new_tokens=16))) for c in conversations()]
    assert [r[0].result() for r in batched] == single
    assert all(single)
    ids_alone = [generate_ids(loaded.model, loaded.tokenizer, [loaded.renderer.prompt_ids(c)],
                              [Sampling(max_new_tokens=16)])[0].ids for c in conversations()]
    assert [r[0].ids for r in batched] == ids_alone  # token for token, not just the text


def test_a_shared_prefix_runs_once_and_changes_nothing(loaded, monkeypatch) -> None:
    """Few-shot prompts (the same examples first, then questions of different lengths): the
    common prefix is prefilled once for all rows, and every row's next-token logits and greedy
    reply are those of the plain left-padded batch; a wrong position or mask would move them."""
    shots = [{"role": "user", "content": "Where is my parcel?"},
             {"role": "assistant", "content": "postroom"},
             {"role": "user", "content": "My card was charged twice."},
             {"role": "assistant", "content": "ledger"}]
    prompts = [loaded.renderer.prompt_ids([*shots, {"role": "user", "content": q}]) for q in QUESTIONS]
    shared = generation._shared_prefix([(p, "") for p in prompts])
    assert shared >= 30 and len({len(p) for p in prompts}) == 3

    def prefill(minimum: int):
        monkeypatch.setattr(generation, "SHARED_PREFIX", minimum)
        sizes, handle = _prefill_sizes(loaded.model)
        try:
            with torch.inference_mode():
                logits, *_ = generation.Batch(loaded.model, loaded.tokenizer)._prefill_prompts(
                    [(p, generation.BASE_ADAPTER) for p in prompts])
            replies = [c.ids for c in generate_ids(loaded.model, loaded.tokenizer, prompts,
                                                   [Sampling(max_new_tokens=12)] * 3)]
        finally:
            handle.remove()
        return logits, replies, sizes

    plain, plain_replies, plain_sizes = prefill(10_000)
    once, once_replies, once_sizes = prefill(16)
    assert plain_sizes[0] == (3, max(map(len, prompts)))
    assert once_sizes[0] == (1, shared) and once_sizes[1] == (3, max(map(len, prompts)) - shared)
    torch.testing.assert_close(once, plain, atol=1e-4, rtol=1e-4)
    assert once_replies == plain_replies and all(once_replies)


def test_seeded_sampling_repeats_and_leaves_global_rng_alone(loaded) -> None:
    hot = Sampling(max_new_tokens=12, temperature=1.5, seed=7)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = texts(generate(loaded, conversations(), hot, n=3))
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert texts(generate(loaded, conversations(), hot, n=3)) == first
    assert all(len(r) == 3 for r in first)
    assert len({text for r in first for text in r}) > 3  # sampling at high temperature varies


def test_a_seeded_row_does_not_depend_on_its_batch(loaded) -> None:
    prompt = loaded.renderer.prompt_ids(conversations()[0])
    hot = Sampling(max_new_tokens=12, temperature=1.2, seed=11)
    alone = generate_ids(loaded.model, loaded.tokenizer, [prompt], [hot])[0]
    others = [loaded.renderer.prompt_ids(c) for c in conversations()[1:]]
    shared = generate_ids(loaded.model, loaded.tokenizer, [*others, prompt],
                          [Sampling(max_new_tokens=20, temperature=1.0, seed=3), Sampling(max_new_tokens=5),
                           hot])[2]
    assert shared.ids == alone.ids and shared.result() == alone.result()


def test_seeded_requests_repeat_under_concurrency(loaded) -> None:
    hot = [Sampling(max_new_tokens=10, temperature=1.3, seed=seed) for seed in (1, 2, 3, 4)]
    prompt = loaded.renderer.prompt_ids(conversations()[1])
    expected = [generate_ids(loaded.model, loaded.tokenizer, [prompt], [s])[0].result() for s in hot]

    def one(sampling: Sampling) -> str:
        return generate_ids(loaded.model, loaded.tokenizer, [prompt], [sampling])[0].result()

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, hot * 2)) == expected * 2
    assert len(set(expected)) > 1


def test_stop_sequences_cut_before_the_stop(loaded) -> None:
    full = generate(loaded, conversations()[:1], Sampling(max_new_tokens=24))[0][0].result()
    words = full.split()
    assert len(words) > 2
    stop = words[2]
    cut = generate(loaded, conversations()[:1], Sampling(max_new_tokens=24, stop=(stop, "never-there")))[0][0]
    assert stop not in cut.result()
    assert full.startswith(cut.result()) and len(cut.result()) < len(full)
    assert cut.finish_reason == "stop"


def test_length_finish_and_token_counts(loaded) -> None:
    prompt = loaded.renderer.prompt_ids(conversations()[2])
    done = generate_ids(loaded.model, loaded.tokenizer, [prompt], [Sampling(max_new_tokens=3)])[0]
    if done.finish_reason == "length":
        assert done.completion_tokens == 3
    else:  # the model ended its turn within three tokens
        assert done.ids[-1] in stop_token_ids(loaded.tokenizer, loaded.model)
    assert done.prompt_tokens == len(prompt)


def test_generation_stops_at_any_end_of_turn_token(loaded) -> None:
    prompt = loaded.renderer.prompt_ids(conversations()[0])
    free = generate_ids(loaded.model, loaded.tokenizer, [prompt], [Sampling(max_new_tokens=12)])[0]
    assert len(free.ids) > 4
    turn_end = free.ids[3]  # pretend the fourth token generated is the template's end of turn
    stops = stop_token_ids(loaded.tokenizer, loaded.model) | {turn_end}
    ended = Completion(loaded.tokenizer, prompt, Sampling(max_new_tokens=12))
    run_batch(loaded.model, loaded.tokenizer, [ended], stops)
    assert ended.ids == free.ids[: free.ids.index(turn_end) + 1]
    assert ended.finish_reason == "stop"


def test_the_templates_end_of_turn_token_is_found(tiny_model_path, tmp_path) -> None:
    """A Llama-3-style template ends a turn with its own special token, not EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|eot|>"]})
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|eot|>{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    eot = tokenizer.convert_tokens_to_ids("<|eot|>")
    assert eot != tokenizer.eos_token_id
    assert stop_token_ids(tokenizer) == {tokenizer.eos_token_id, eot}


def test_cancel_ends_one_row_and_leaves_the_others(loaded) -> None:
    prompt = loaded.renderer.prompt_ids(conversations()[0])
    kept = Completion(loaded.tokenizer, prompt, Sampling(max_new_tokens=10))
    gone = Completion(loaded.tokenizer, prompt, Sampling(max_new_tokens=10), abandoned=threading.Event())
    gone.abandoned.set()
    run_batch(loaded.model, loaded.tokenizer, [kept, gone])
    alone = generate_ids(loaded.model, loaded.tokenizer, [prompt], [Sampling(max_new_tokens=10)])[0]
    assert kept.ids == alone.ids and gone.ids == [] and gone.done.is_set()
    streamed = stream(loaded, conversations()[0], Sampling(max_new_tokens=200, temperature=1.0, seed=1))
    pieces = iter(streamed)
    next(pieces)
    streamed.cancel()
    rest = list(pieces)
    assert streamed.done.wait(30) and streamed.completion_tokens < 200
    assert streamed.result() == streamed.text and streamed.text.endswith("".join(rest))


def test_text_never_holds_half_a_character(loaded) -> None:
    tokenizer = loaded.tokenizer
    text = "Yarn 🧶 毛线 — Wren"  # the emoji and the Chinese characters span several byte tokens
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tokenizer.decode(ids[:n]) for n in range(1, len(ids)))
    completion = Completion(tokenizer, [1, 2], Sampling(max_new_tokens=1000))
    for token in ids:
        completion._put(token)
    completion._finish("stop")
    pieces = list(completion)
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)


def test_grpo_samples_through_the_engine(loaded, monkeypatch) -> None:
    from tunesmith.recipe import ReinforcementConfig
    from tunesmith.train.objectives.grpo import GroupRelativeObjective, PromptExample

    batches: list[int] = []
    real = generation.Batch.add

    def spy(self, completions, adapters=None):
        batches.append(len(completions))
        return real(self, completions, adapters)

    monkeypatch.setattr(generation.Batch, "add", spy)
    config = ReinforcementConfig(graders=[{"type": "string_check", "operation": "eq",
                                           "input": "{{sample.output_text}}", "reference": "x"}],
                                 group_size=3, max_new_tokens=8)
    objective = GroupRelativeObjective(config)
    objective.tokenizer = loaded.tokenizer
    examples = [PromptExample(loaded.renderer.prompt_ids(c), {}, None, 0) for c in conversations()[:2]]
    torch.manual_seed(5)
    groups = objective.sample(loaded.model, examples, "cpu")
    torch.manual_seed(5)
    assert objective.sample(loaded.model, examples, "cpu") == groups  # the recipe's seed repeats a run
    assert batches == [6, 6]  # two prompts x three completions, one batch each time
    ends = stop_token_ids(loaded.tokenizer, loaded.model)
    for group in groups:
        assert len(group) == 3
        for ids in group:
            assert 0 < len(ids) <= 8
            assert all(t not in ends for t in ids[:-1])  # cut at its first end-of-turn token


def test_evaluation_gives_each_prompt_its_tools(loaded, monkeypatch) -> None:
    from tunesmith.evaluate.runner import Evaluation

    seen: list[object] = []
    real = loaded.renderer.prompt_ids

    def recording(messages, tools=None):
        seen.append(tools)
        return real(messages, tools)

    monkeypatch.setattr(loaded.renderer, "prompt_ids", recording)
    tool = {"type": "function", "function": {"name": "track", "parameters": {"type": "object"}}}
    evaluator = Evaluation.__new__(Evaluation)
    evaluator.settings = type("S", (), {"max_new_tokens": 4, "temperature": 0.0, "stop": [],
                                        "bootstrap_seed": 0})()
    replies = evaluator._generate(loaded, conversations()[:2], [[tool], None])
    assert len(replies) == 2 and seen == [[tool], None]


def _never_ending(loaded, conversation, tokens: int, **sampling) -> Completion:
    """A reply held off every end-of-turn token, so it runs to its token limit."""
    stops = stop_token_ids(loaded.tokenizer, loaded.model)
    allowed = [t for t in range(len(loaded.tokenizer)) if t not in stops]
    return Completion(loaded.tokenizer, loaded.renderer.prompt_ids(conversation),
                      Sampling(max_new_tokens=tokens, **sampling), constraint=lambda ids: allowed)


def test_greedy_equals_transformers_generate(loaded) -> None:
    """The engine's own decode loop gives the tokens transformers' greedy search gives."""
    prompts = [loaded.renderer.prompt_ids(c) for c in conversations()]
    ours = generate_ids(loaded.model, loaded.tokenizer, prompts, [Sampling(max_new_tokens=12)] * 3)
    stops = sorted(stop_token_ids(loaded.tokenizer, loaded.model))
    for prompt, completion in zip(prompts, ours, strict=True):
        out = loaded.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                    eos_token_id=stops, pad_token_id=loaded.tokenizer.pad_token_id)
        assert completion.ids == out[0, len(prompt):].tolist()
        assert completion.ids


def test_rows_join_a_running_batch_and_leave_it_when_done(loaded) -> None:
    """Continuous batching in the engine: rows added between steps reply as they would alone,
    the running rows' replies do not change, and finished rows leave the batch."""
    convs = conversations()
    first = _never_ending(loaded, convs[2], 20)
    hot = _never_ending(loaded, convs[0], 15, temperature=1.1, seed=4)
    short = Completion(loaded.tokenizer, loaded.renderer.prompt_ids(convs[1]), Sampling(max_new_tokens=3))
    batch = generation.Batch(loaded.model, loaded.tokenizer)
    batch.add([first])
    for _ in range(6):
        batch.step()
    batch.add([hot, short])  # their prompts are shorter than the running row's cache: both padded
    assert len(batch.rows) == 3
    sizes = []
    while batch.rows:
        batch.step()
        sizes.append(len(batch.rows))
        if batch.rows:  # no leading column is padding for every row left: those are cut
            assert batch.mask.shape[0] == len(batch.rows) and bool(batch.mask[:, 0].any())
    assert sizes.count(2) and sizes.count(1)  # the short row left first, then the first row
    assert batch.cache is None and batch.mask is None
    for joined, messages, tokens, sampling in ((first, convs[2], 20, {}), (hot, convs[0], 15,
                                               {"temperature": 1.1, "seed": 4})):
        alone = _never_ending(loaded, messages, tokens, **sampling)
        run_batch(loaded.model, loaded.tokenizer, [alone])
        assert joined.ids == alone.ids and len(joined.ids) == tokens
    alone = generate_ids(loaded.model, loaded.tokenizer, [short.prompt_ids], [Sampling(max_new_tokens=3)])[0]
    assert short.ids == alone.ids


def _sliding_window_model(tiny_model_path):
    """A tiny random Mistral with a sliding window of 4 (its cache cannot be padded, cut or
    copied), and the bundled tokenizer."""
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=2048, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, sliding_window=4,
                           max_position_embeddings=256, pad_token_id=3, eos_token_id=2, bos_token_id=0)
    return MistralForCausalLM(config).eval(), AutoTokenizer.from_pretrained(tiny_model_path)


def test_a_sliding_window_model_generates_but_takes_no_newcomers(tmp_path, tiny_model_path) -> None:
    """A cache whose layers cannot be padded and cut (sliding window) is never merged: the batch
    refuses joiners while it runs and its finished rows ride along, ignored."""
    model, tokenizer = _sliding_window_model(tiny_model_path)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12]]
    ours = generate_ids(model, tokenizer, prompts, [Sampling(max_new_tokens=8), Sampling(max_new_tokens=3)],
                        stop_ids=frozenset({2}))
    for prompt, completion, tokens in zip(prompts, ours, (8, 3), strict=True):
        out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=tokens, do_sample=False,
                             eos_token_id=2, pad_token_id=3)
        assert completion.ids == out[0, len(prompt):].tolist()
    batch = generation.Batch(model, tokenizer, frozenset({2}))
    batch.add([Completion(tokenizer, prompts[0], Sampling(max_new_tokens=8))])
    assert not batch.joinable
    with pytest.raises(RuntimeError, match="cannot take new rows"):
        batch.add([Completion(tokenizer, prompts[1], Sampling(max_new_tokens=3))])


def _prefill_sizes(model) -> tuple[list[tuple[int, int]], object]:
    """Records [rows, positions] of every forward of more than one position (a prefill: a shared
    prefix's, or the rows' own tokens)."""
    sizes: list[tuple[int, int]] = []

    def hook(module, args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            sizes.append(tuple(kwargs["input_ids"].shape))

    return sizes, model.register_forward_pre_hook(hook, with_kwargs=True)


def test_rows_with_the_same_prompt_share_one_prefill(loaded) -> None:
    """A group of completions of one prompt (GRPO, `n` of a request) prefills that prompt once;
    each row then replies exactly as it would alone, greedy or seeded."""
    prompts = [loaded.renderer.prompt_ids(c) for c in conversations()[:2]]
    rows = [prompts[0]] * 3 + [prompts[1]] * 2 + [prompts[0]]
    samplings = [Sampling(max_new_tokens=10, temperature=1.2, seed=seed) for seed in range(5)] + \
        [Sampling(max_new_tokens=10)]
    sizes, handle = _prefill_sizes(loaded.model)
    try:
        together = generate_ids(loaded.model, loaded.tokenizer, rows, samplings, batch_size=len(rows))
    finally:
        handle.remove()
    shared = next(i for i, (a, b) in enumerate(zip(*prompts, strict=False)) if a != b)
    assert shared >= generation.SHARED_PREFIX  # the template's system prompt
    assert sizes == [(1, shared), (2, max(map(len, prompts)) - shared)]  # two distinct prompts, once each
    for prompt, sampling, completion in zip(rows, samplings, together, strict=True):
        alone = generate_ids(loaded.model, loaded.tokenizer, [prompt], [sampling])[0]
        assert completion.ids == alone.ids and completion.result() == alone.result()
    assert len({tuple(c.ids) for c in together[:3]}) > 1  # the copies still draw their own samples


def test_a_cache_that_cannot_be_copied_prefills_every_row(tmp_path, tiny_model_path) -> None:
    """Sliding-window caches are not copied between rows: each row is prefilled, and greedy
    replies still equal transformers' own."""
    model, tokenizer = _sliding_window_model(tiny_model_path)
    prompt = [5, 6, 7, 8, 9, 10]
    sizes, handle = _prefill_sizes(model)
    try:
        ours = generate_ids(model, tokenizer, [prompt, prompt], [Sampling(max_new_tokens=6)] * 2,
                            stop_ids=frozenset({2}))
        again = generate_ids(model, tokenizer, [prompt, prompt], [Sampling(max_new_tokens=6)] * 2,
                             stop_ids=frozenset({2}))
    finally:
        handle.remove()
    # tried once (one row), found not copyable and prefilled per row; not tried again
    assert sizes == [(1, 6), (2, 6), (2, 6)]
    out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False,
                         eos_token_id=2, pad_token_id=3)
    assert ours[0].ids == ours[1].ids == again[0].ids == out[0, len(prompt):].tolist()


def test_the_models_repetition_penalty_applies_where_the_caller_sets_none(tiny_model_path) -> None:
    """generation_config's repetition_penalty is the model's default, as in transformers'
    `generate`: greedy output equals generate's with it, and differs from output without it."""
    fresh = load_trained(str(tiny_model_path))
    fresh.model.generation_config.repetition_penalty = 30.0
    prompts = [fresh.renderer.prompt_ids(c) for c in conversations()]
    stops = sorted(stop_token_ids(fresh.tokenizer, fresh.model))
    ours = generate_ids(fresh.model, fresh.tokenizer, prompts, [Sampling(max_new_tokens=12)] * 3)
    unpenalised = generate_ids(fresh.model, fresh.tokenizer, prompts,
                               [Sampling(max_new_tokens=12, repetition_penalty=1.0)] * 3)
    for prompt, completion in zip(prompts, ours, strict=True):
        out = fresh.model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                                   eos_token_id=stops, pad_token_id=fresh.tokenizer.pad_token_id)
        assert completion.ids == out[0, len(prompt):].tolist()
        assert completion.sampling.repetition_penalty == 30.0
    assert [c.ids for c in ours] != [c.ids for c in unpenalised]


def test_the_models_top_k_applies_to_sampling(tiny_model_path) -> None:
    """generation_config's top_k holds sampled rows to the k likeliest tokens: top_k 1 samples
    the greedy reply at any temperature; a caller's own top_k (0: off) wins over the model's."""
    fresh = load_trained(str(tiny_model_path))
    fresh.model.generation_config.top_k = 1
    greedy = texts(generate(fresh, conversations(), Sampling(max_new_tokens=12)))
    hot = Sampling(max_new_tokens=12, temperature=1.8, seed=3)
    assert texts(generate(fresh, conversations(), hot)) == greedy
    assert texts(generate(fresh, conversations(), replace(hot, top_k=0))) != greedy


def test_decode_steps_write_the_cache_in_place(loaded) -> None:
    """After the prefill every cache layer grows into spare room: a decode step writes its
    position into the same buffer (no copy of the whole cache), and the replies are
    transformers' own (test_greedy_equals_transformers_generate)."""
    prompt = loaded.renderer.prompt_ids(conversations()[0])
    batch = generation.Batch(loaded.model, loaded.tokenizer, frozenset())
    batch.add([Completion(loaded.tokenizer, prompt, Sampling(max_new_tokens=6)),
               Completion(loaded.tokenizer, prompt[:-3], Sampling(max_new_tokens=6))])
    layer = batch.cache.layers[0]
    assert type(layer) is generation._roomy_layer()
    batch.step()
    room = layer.room[0].data_ptr()
    held = layer.keys.shape[-2]
    batch.step()
    batch.step()
    assert layer.room[0].data_ptr() == room == layer.keys.data_ptr()  # the same buffer, written in place
    assert layer.keys.shape[-2] == held + 2
