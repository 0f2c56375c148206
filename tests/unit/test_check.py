"""The pre-flight check: one crafted file per finding, every input type, the CLI, and
bounded memory on a 200,000-line file."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_jsonl
from tunesmith.cli import main
from tunesmith.data import check_parts, check_scan
from tunesmith.data.check import CheckReport, check_dataset
from tunesmith.data.load import load_dataset
from tunesmith.data.render import Renderer
from tunesmith.model.loading import load_tokenizer, resolve_model
from tunesmith.train.auto import auto_epochs

VOCAB = [f"{a}{b}{c}" for a in ("b", "d", "f", "g", "k", "m", "p", "t") for b in "aeiou"
         for c in ("n", "r", "s", "x")]


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words)).capitalize() + "."


def chat(user: str, assistant: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": user},
                         {"role": "assistant", "content": assistant}]}


def distinct_chats(count: int, seed: int = 0) -> list[dict]:
    """Chats of random words: no two are near each other."""
    rng = random.Random(seed)
    return [chat(sentence(rng, 12), sentence(rng, 16)) for _ in range(count)]


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def found(report: CheckReport, code: str) -> list[str]:
    """Where each kept finding of `code` points."""
    return [f.where or "" for f in report.findings if f.code == code]


def message_of(report: CheckReport, code: str) -> str:
    return next(f.message for f in report.findings if f.code == code)


@pytest.fixture(scope="module")
def model(tiny_model_path: Path) -> str:
    return str(tiny_model_path)


# --- a clean file and the numbers --------------------------------------------------------


def test_clean_file_is_ok_and_token_counts_match_rendering(tmp_path: Path, model: str) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", distinct_chats(60))
    report = check_dataset(path, model=model, epochs=2)
    assert report.ok and report.errors == 0
    assert set(report.finding_counts) <= {"no_chat_template"}
    assert (report.counts.rows, report.counts.examples, report.counts.with_errors) == (60, 60, 0)
    assert report.format == "chat"

    renderer = Renderer(load_tokenizer(resolve_model(model)))
    examples = [renderer.render(r) for r in load_dataset(path).records]
    lengths = np.array([len(e) for e in examples])
    tokens = report.tokens
    assert tokens is not None
    assert tokens.examples == 60 and tokens.total == lengths.sum()
    assert tokens.max == lengths.max() and tokens.p50 == int(np.percentile(lengths, 50))
    assert tokens.p95 == int(np.percentile(lengths, 95))
    assert tokens.trained == sum(e.trained_tokens for e in examples) and tokens.trained_exact
    assert tokens.billed == tokens.total * 2 and tokens.epochs == 2
    assert report.packing is not None and report.packing.micro_batches_packed >= 1
    assert 0 <= report.packing.padded_waste < 1


def test_preview_shows_which_tokens_are_trained(tmp_path: Path, model: str) -> None:
    rows = [chat("Where is my parcel?", "It left on Monday."), *distinct_chats(3)]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    report = check_dataset(path, model=model)
    assert report.preview and report.preview_where == f"{path}:1"
    trained = "".join(text for text, on in report.preview if on)
    untrained = "".join(text for text, on in report.preview if not on)
    tokenizer = load_tokenizer(resolve_model(model))
    assert trained.startswith("It left on Monday.")
    assert trained[len("It left on Monday."):] in tokenizer.all_special_tokens
    assert "Where is my parcel?" in untrained and "Monday" not in untrained


def test_preview_pieces_read_as_the_decoded_text(model: str) -> None:
    tokenizer = load_tokenizer(resolve_model(model))
    ids = tokenizer("Café 😀 naïve  spaces\tand ünïcödé", add_special_tokens=False)["input_ids"]
    pieces = check_scan.preview_tokens(tokenizer, ids, [i % 2 for i in range(len(ids))])
    assert "".join(text for text, _ in pieces) == tokenizer.decode(ids)
    assert any(trained for _, trained in pieces) and not all(trained for _, trained in pieces)


def test_auto_epochs_follow_the_training_policy(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", distinct_chats(20))
    report = check_dataset(path, model=None, epochs="auto")
    assert report.settings["epochs"] == auto_epochs(20)
    assert report.tokens is None and report.preview is None


def test_trained_tokens_are_estimated_past_the_exact_limit(tmp_path: Path, model: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", distinct_chats(120, seed=7))
    exact = check_dataset(path, model=model).tokens
    monkeypatch.setattr(check_scan, "EXACT_LIMIT", 16)
    sampled = check_dataset(path, model=model).tokens
    assert exact is not None and sampled is not None
    assert exact.trained_exact and not sampled.trained_exact
    assert sampled.total == exact.total
    assert abs(sampled.trained - exact.trained) < 0.1 * exact.trained


# --- errors from parsing -----------------------------------------------------------------


def test_bom_and_crlf_are_accepted(tmp_path: Path, model: str) -> None:
    lines = [json.dumps(row) for row in distinct_chats(12)]
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode("utf-8") + b"\r\n")
    report = check_dataset(path, model=model)
    assert report.errors == 0 and report.counts.examples == 12


def test_invalid_json_reports_line_and_column(tmp_path: Path) -> None:
    lines = [json.dumps(row) for row in distinct_chats(4)]
    lines[2] = '{"messages": [{"role": "user", "content": "Hi"} {"role": "assistant"}]}'
    report = check_dataset(write_lines(tmp_path / "broken.jsonl", lines), model=None)
    assert not report.ok
    assert found(report, "invalid_json") == [f"{tmp_path / 'broken.jsonl'}:3:49"]
    assert "column 49" in message_of(report, "invalid_json")
    assert report.counts.with_errors == 1 and report.counts.examples == 3


@pytest.mark.parametrize(("row", "code"), [
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
      "extra": 1}, "unknown_key"),
    ({"messages": [{"role": "user", "content": "Hi", "mood": "happy"},
                   {"role": "assistant", "content": "Yo"}]}, "unknown_key"),
    ({"messages": [{"role": "customer", "content": "Hi"},
                   {"role": "assistant", "content": "Yo"}]}, "unknown_role"),
    ({"messages": [{"content": "Hi"}, {"role": "assistant", "content": "Yo"}]}, "missing_key"),
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}]},
     "missing_content"),
    ({"messages": [{"role": "system", "content": "Be kind"}, {"role": "user", "content": "Hi"}]},
     "no_assistant"),
    ({"messages": "Hi there"}, "wrong_type"),
    ({"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "Yo"}]},
     "wrong_type"),
    ({"messages": []}, "empty_messages"),
    ([1, 2, 3], "not_an_object"),
])
def test_chat_errors_name_their_line(tmp_path: Path, row: object, code: str) -> None:
    lines = [json.dumps(r) for r in distinct_chats(5)]
    lines.insert(3, json.dumps(row))
    path = write_lines(tmp_path / "train.jsonl", lines)
    report = check_dataset(path, model=None)
    assert not report.ok
    assert found(report, code) and all(w == f"{path}:4" for w in found(report, code))
    assert report.counts.with_errors == 1


@pytest.mark.parametrize(("row", "code"), [
    ({"prompt": "Hi", "chosen": "Hello!", "rejected": ""}, "empty_preference"),
    ({"prompt": "Hi", "chosen": [], "rejected": "Go away"}, "empty_preference"),
    ({"prompt": "Hi", "chosen": "Hello!"}, "missing_key"),
    ({"prompt": "Hi", "chosen": 5, "rejected": "Go away"}, "wrong_type"),
])
def test_preference_errors(tmp_path: Path, row: dict, code: str) -> None:
    rows = [{"prompt": f"Question {i}?", "chosen": f"Good answer {i}.", "rejected": f"Bad {i}."}
            for i in range(4)]
    rows.insert(2, row)
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    report = check_dataset(path, model=None)
    assert report.format == "preference"
    assert found(report, code) == [f"{path}:3"]


def test_completion_errors(tmp_path: Path) -> None:
    rows = [{"prompt": f"Say {w}", "completion": f" {w}!"} for w in VOCAB[:6]]
    rows[4] = {"prompt": "Say nothing", "completion": ""}
    rows[5] = {"prompt": "Say it", "completion": 7}
    report = check_dataset(write_jsonl(tmp_path / "c.jsonl", rows), model=None)
    assert found(report, "missing_content") == [f"{tmp_path / 'c.jsonl'}:5"]
    assert found(report, "wrong_type") == [f"{tmp_path / 'c.jsonl'}:6"]


def test_unknown_shape_and_mixed_shapes(tmp_path: Path) -> None:
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"question": "Hi", "answer": "Yo"}])
    report = check_dataset(odd, model=None)
    assert found(report, "unknown_shape") == [f"{odd}:1"]
    assert found(report, "no_examples") == [str(odd)]

    folder = tmp_path / "folder"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", distinct_chats(3))
    write_jsonl(folder / "b.jsonl", [{"prompt": "Hi", "completion": " there"}])
    report = check_dataset(folder, model=None)
    assert found(report, "mixed_formats") == [str(folder)]
    assert "chat (3)" in message_of(report, "mixed_formats")


# --- warnings ----------------------------------------------------------------------------


def test_roles_not_alternating(tmp_path: Path) -> None:
    rows = distinct_chats(5)
    rows[1]["messages"].insert(1, {"role": "user", "content": "And another thing."})
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    report = check_dataset(path, model=None)
    assert report.ok and found(report, "roles_not_alternating") == [f"{path}:2"]


def test_overlong_examples_are_truncated_or_dropped(tmp_path: Path, model: str) -> None:
    rng = random.Random(1)
    rows = [chat(f"Hi {n}", "Hello.") for n in ("one", "two", "three", "four")]
    rows[1] = chat("Hi", sentence(rng, 150))            # long answer: truncated, still trains
    rows[3] = chat(sentence(rng, 150), "Yes.")          # long prompt: nothing left to train
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    report = check_dataset(path, model=model, max_length=64)
    assert report.ok
    assert found(report, "too_long") == [f"{path}:2"]
    assert "truncated to 64" in message_of(report, "too_long")
    assert found(report, "too_long_dropped") == [f"{path}:4"]
    assert "no trained tokens" in message_of(report, "too_long_dropped")
    tokens = report.tokens
    assert tokens is not None
    assert (tokens.over_max_length, tokens.truncated, tokens.dropped) == (2, 1, 1)
    assert tokens.examples == 3 and tokens.max == 64

    dropping = check_dataset(path, model=model, max_length=64, overlong="drop")
    assert dropping.tokens is not None and dropping.tokens.dropped == 2
    assert len(found(dropping, "too_long_dropped")) == 2


def test_exact_and_near_duplicates_name_both_lines(tmp_path: Path) -> None:
    rows = distinct_chats(8, seed=3)
    user, answer = (m["content"] for m in rows[1]["messages"])
    rows[5] = chat(user.upper(), answer.replace(" ", "  \t"))        # case and spacing only
    user, answer = (m["content"] for m in rows[2]["messages"])
    rows[7] = chat(user.replace(".", "!"), answer.replace(" ", ", "))  # punctuation only
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    report = check_dataset(path, model=None)
    assert found(report, "duplicate") == [f"{path}:6"]
    assert message_of(report, "duplicate") == "exact duplicate of line 2"
    assert found(report, "near_duplicate") == [f"{path}:8"]
    assert "line 3" in message_of(report, "near_duplicate")


def test_duplicates_across_files_of_a_folder_name_the_file(tmp_path: Path) -> None:
    rows = distinct_chats(4, seed=8)
    write_jsonl(tmp_path / "a.jsonl", rows[:2])
    write_jsonl(tmp_path / "b.jsonl", [rows[2], rows[0], rows[3], rows[2]])
    report = check_dataset(tmp_path, model=None)
    assert found(report, "duplicate") == [f"{tmp_path / 'b.jsonl'}:2", f"{tmp_path / 'b.jsonl'}:4"]
    messages = [f.message for f in report.findings if f.code == "duplicate"]
    assert messages == [f"exact duplicate of {tmp_path / 'a.jsonl'}:1", "exact duplicate of line 1"]


def test_validation_leakage_names_lines_in_both_files(tmp_path: Path, model: str) -> None:
    train_rows = distinct_chats(30, seed=4)
    val_rows = distinct_chats(4, seed=5)
    val_rows.insert(1, train_rows[9])                                          # exact copy
    val_rows.insert(3, json.loads(json.dumps(train_rows[20]).replace(".", "?")))  # near copy
    train = write_jsonl(tmp_path / "train.jsonl", train_rows)
    val = write_jsonl(tmp_path / "val.jsonl", val_rows)
    report = check_dataset(train, validation=val, model=model)
    assert found(report, "validation_overlap") == [f"{val}:2"]
    assert f"{train}:10" in message_of(report, "validation_overlap")
    assert found(report, "validation_near_overlap") == [f"{val}:4"]
    assert f"{train}:21" in message_of(report, "validation_near_overlap")
    assert report.validation is not None and report.validation.counts.examples == 6
    assert report.validation.tokens is not None and report.validation.tokens.examples == 6
    assert found(report, "too_few_examples") == [str(train)]  # 6 validation examples are fine


def test_validation_errors_count_and_shape_must_match(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", distinct_chats(5))
    val = write_lines(tmp_path / "val.jsonl", ['{"prompt": "Hi", "completion": " yo"}', "{oops"])
    report = check_dataset(train, validation=val, model=None)
    assert found(report, "invalid_json") == [f"{val}:2:2"]
    assert found(report, "validation_format") == [str(val)]
    assert not report.ok and report.errors == 2


def test_the_replay_file_is_checked_like_the_others(tmp_path: Path) -> None:
    from tunesmith.recipe import DataConfig

    train = write_jsonl(tmp_path / "train.jsonl", distinct_chats(12))
    replay = write_lines(tmp_path / "replay.jsonl", ['{"prompt": "Hi", "completion": " yo"}', "{oops"])
    report = check_dataset(DataConfig(train=str(train), replay=str(replay)), model=None)
    assert found(report, "invalid_json") == [f"{replay}:2:2"]
    assert found(report, "replay_format") == [str(replay)]
    assert report.replay is not None and report.replay.counts.examples == 1
    assert not report.ok and report.to_dict()["replay"]["counts"]["examples"] == 1
    # A few replayed chats are plenty: no "too few examples" warning for them.
    assert str(replay) not in found(report, "too_few_examples")


def test_too_few_examples_is_a_warning(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", distinct_chats(7))
    report = check_dataset(path, model=None)
    assert report.ok and found(report, "too_few_examples") == [str(path)]
    assert "only 7 examples" in message_of(report, "too_few_examples")
    enough = check_dataset(write_jsonl(tmp_path / "more.jsonl", distinct_chats(50)), model=None)
    assert "too_few_examples" not in enough.finding_counts


def test_sensitive_data_is_reported_masked(tmp_path: Path) -> None:
    secret = "sk-proj-Zyxwvutsrqponmlkjihg0123456789"
    rows = distinct_chats(6, seed=6)
    rows[1] = chat("Reach me at jane.doe@example.com", "Noted.")
    rows[2] = chat("My phone is +44 20 7946 0958", "Thanks.")
    rows[3] = chat("Card 4111 1111 1111 1111 please", "Never share card numbers.")
    rows[4] = chat("Here is my key", f"Use {secret} for the API.")
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    report = check_dataset(path, model=None)
    assert report.ok
    assert found(report, "sensitive_email") == [f"{path}:2"]
    assert found(report, "sensitive_phone") == [f"{path}:3"]
    assert found(report, "sensitive_card") == [f"{path}:4"]
    assert found(report, "sensitive_secret") == [f"{path}:5"]
    assert message_of(report, "sensitive_secret") == "OpenAI API key sk-p…89 in messages[1]"
    dumped = json.dumps(report.to_dict())
    assert secret not in dumped and "jane.doe" not in dumped and "4111 1111" not in dumped


def test_fallback_template_is_noted(tmp_path: Path, stories_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", distinct_chats(3))
    report = check_dataset(path, model=str(stories_path))
    assert found(report, "no_chat_template") == [str(stories_path)]
    plain = write_jsonl(tmp_path / "text.jsonl", [{"text": "Once upon a time."}])
    assert "no_chat_template" not in check_dataset(plain, model=str(stories_path)).finding_counts


def test_a_template_that_fails_is_an_error_on_its_line(tmp_path: Path, stories_path: Path) -> None:
    tokenizer = load_tokenizer(resolve_model(str(stories_path)))
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}"
        "{% if 'BOOM' in m['content'] %}{{ raise_exception('no booms here') }}{% endif %}"
        "<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}"
        "{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    folder = tmp_path / "templated"
    tokenizer.save_pretrained(folder)
    shutil.copy(stories_path / "config.json", folder / "config.json")
    rows = distinct_chats(4)
    rows[2] = chat("Say BOOM", "No.")
    report = check_dataset(write_jsonl(tmp_path / "train.jsonl", rows), model=str(folder))
    assert found(report, "render_failed") == [f"{tmp_path / 'train.jsonl'}:3"]
    assert "no booms here" in message_of(report, "render_failed")
    assert "no_chat_template" not in report.finding_counts
    assert report.counts.examples == 3 and report.tokens is not None
    assert report.tokens.examples == 3


def test_repeated_findings_are_grouped(tmp_path: Path) -> None:
    lines = [json.dumps(row) for row in distinct_chats(10)] + ["{not json"] * 45
    report = check_dataset(write_lines(tmp_path / "train.jsonl", lines), model=None)
    kept = found(report, "invalid_json")
    assert len(kept) == check_parts.MAX_LOCATIONS and kept[0].endswith(":11:2")
    assert report.finding_counts["invalid_json"] == 45 and report.errors == 45
    (code, shown, total), *_ = [g for g in report.groups() if g[0] == "invalid_json"]
    assert (code, len(shown), total) == ("invalid_json", 20, 45)


# --- other inputs ------------------------------------------------------------------------


def test_csv_with_a_known_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text('prompt,completion\n"What is 2+2?","Four."\n"Two lines","One\nTwo"\n'
                    '"Empty one",""\n"Last","Done."\n', encoding="utf-8")
    report = check_dataset(path, model=None)
    assert report.format == "completion" and report.counts.rows == 4
    assert found(report, "missing_content") == [f"{path}:5"]


def test_parquet_with_a_known_bad_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = distinct_chats(5)
    rows[2]["messages"][0]["role"] = "robot"
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    report = check_dataset(path, model=None)
    assert report.counts.rows == 5 and report.counts.examples == 4
    assert found(report, "unknown_role") == [f"{path}:3"]


def test_hugging_face_dataset_folder(tmp_path: Path, model: str) -> None:
    datasets = pytest.importorskip("datasets")
    rows = distinct_chats(5)
    rows[1] = {"messages": [{"role": "user", "content": "Anyone there?"},
                            {"role": "user", "content": "Hello?"}]}
    folder = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))
    report = check_dataset(folder, model=model)
    assert report.counts.rows == 5
    assert found(report, "no_assistant") == [f"{folder}:2"]
    assert report.tokens is not None and report.tokens.examples == 4


# --- the command line --------------------------------------------------------------------


def bad_file(tmp_path: Path) -> Path:
    lines = [json.dumps(row) for row in distinct_chats(6)]
    lines[2] = '{"messages": [{"role": "user", "content": "Hi"}'
    lines[4] = json.dumps(chat("Mail me at bob@example.org", "Will do."))
    return write_lines(tmp_path / "bad.jsonl", lines)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clean = write_jsonl(tmp_path / "clean.jsonl", distinct_chats(5))
    assert main(["data", "check", str(clean), "--model", "none"]) == 0
    assert main(["data", "check", str(bad_file(tmp_path)), "--model", "none"]) == 1
    assert main(["data", "check", str(tmp_path / "missing.jsonl"), "--model", "none"]) == 2
    capsys.readouterr()


def test_cli_human_output(tmp_path: Path, model: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = bad_file(tmp_path)
    assert main(["data", "check", str(path), "--model", model, "--epochs", "2"]) == 1
    out = capsys.readouterr().out
    assert "5 examples in 6 rows · 1 with errors" in out
    assert f"✗ {path}:3:" in out and "not valid JSON" in out
    assert f"! {path}:5  e-mail address b…@example.org" in out
    assert "fix: each line must be one complete JSON object" in out
    assert "billed (×2 epochs)" in out and "padding would waste" in out
    assert f"preview of {path}:1 (trained tokens in [brackets])" in out
    assert "\n[" in out or "[" in out.split("preview of")[1]
    assert out.rstrip().endswith("✗ 1 error(s): fix them before training")


def test_cli_json(tmp_path: Path, model: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = bad_file(tmp_path)
    assert main(["data", "check", str(path), "--model", model, "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["errors"] == 1
    assert data["counts"] == {"rows": 6, "examples": 5, "with_errors": 1}
    assert {f["code"] for f in data["findings"]} >= {"invalid_json", "sensitive_email"}
    assert data["tokens"]["examples"] == 5 and data["packing"]["micro_batches_packed"] >= 1
    assert any(trained for _, trained in data["preview"])


# --- memory ------------------------------------------------------------------------------

MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    from tunesmith.data.check import _load_renderer, check_dataset

    def status_mb(key):
        # VmHWM (peak) belongs to this program's address space; ru_maxrss would still
        # count the parent that forked it.
        with open("/proc/self/status") as handle:
            line = next(line for line in handle if line.startswith(key + ":"))
        return int(line.split()[1]) / 1024

    path, model = sys.argv[1:3]
    _load_renderer(model, "assistant")          # imports and tokenizer load are not the check
    before = status_mb("VmRSS")
    report = check_dataset(path, model=model)
    print(json.dumps({"growth_mb": status_mb("VmHWM") - before, "rows": report.counts.rows,
                      "duplicates": report.finding_counts.get("duplicate", 0),
                      "tokenized": report.tokens.examples}))
""")


@pytest.mark.slow  # tokenises a 200,000-line file
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_200k_lines_in_bounded_memory(tmp_path: Path, model: str) -> None:
    """Streams with tokenization on: holding the file would take far more than it grows."""
    rng = random.Random(0)
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as big:
        for index in range(200_000):
            line = json.dumps(chat(f"Question {index}: {sentence(rng, 8)}", sentence(rng, 12)))
            big.write(line + "\n")
        big.write(line + "\n")  # one exact duplicate at the end
    size_mb = path.stat().st_size / 2**20
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(path), model],
                            capture_output=True, text=True, timeout=240, check=True)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["rows"] == 200_001 and stats["duplicates"] == 1
    assert stats["tokenized"] == 200_001
    assert stats["growth_mb"] < 100, stats
    assert stats["growth_mb"] < size_mb * 3, (stats, size_mb)
