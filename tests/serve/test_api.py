"""The official `openai` client against a real `tunesmith serve` process on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.serve.server import wait_for

FAST = {"training.max_steps": 3, "training.batch_size": 4, "training.eval_every": 1000}
FINISHED = ("succeeded", "failed", "cancelled")


def finished(client: openai.OpenAI, job_id: str, timeout: float = 240) -> Any:
    return wait_for(lambda: (job := client.fine_tuning.jobs.retrieve(job_id)).status in FINISHED and job,
                    timeout)


def events(client: openai.OpenAI, job_id: str) -> list[Any]:
    return list(client.fine_tuning.jobs.list_events(job_id, limit=100))


def test_upload_train_follow_events_checkpoints_and_chat(client: openai.OpenAI, data_dir: Path) -> None:
    path = data_dir / "colours.jsonl"
    uploaded = client.files.create(file=path.open("rb"), purpose="fine-tune")
    assert uploaded.id.startswith("file-") and uploaded.bytes == path.stat().st_size
    assert uploaded.filename == "colours.jsonl"
    assert client.files.content(uploaded.id).read() == path.read_bytes()
    assert uploaded.id in [f.id for f in client.files.list()]

    job = client.fine_tuning.jobs.create(
        model="tunesmith/tiny-chat", training_file=uploaded.id, suffix="colours", seed=7,
        metadata={"team": "support"}, method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "learning_rate_multiplier": 5}}},
        extra_body={"tunesmith": {"set": FAST}})
    assert job.status == "validating_files" and job.seed == 7
    assert job.hyperparameters.n_epochs == 2
    done = finished(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft:tiny-chat:colours:")
    assert done.trained_tokens > 0

    seen = events(client, job.id)
    messages = [e.message for e in seen]
    assert seen[0].message.startswith("The job has successfully completed")  # newest first
    assert "Validating training file: " + uploaded.id in messages
    metrics = [e for e in seen if e.type == "metrics" and e.data.get("train_loss") is not None]
    assert sorted(e.data["step"] for e in metrics) == [1, 2, 3]
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert len(page.data) == 2 and page.has_more
    after = client.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id)
    assert after.data[0].id not in {e.id for e in page.data}

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and checkpoints[0].step_number == 3
    assert checkpoints[0].fine_tuned_model_checkpoint.startswith(done.fine_tuned_model)
    listed = client.fine_tuning.jobs.list(metadata={"team": "support"})
    assert [j.id for j in listed.data] == [job.id]
    assert done.fine_tuned_model in [m.id for m in client.models.list()]
    assert client.models.retrieve(done.fine_tuned_model).id == done.fine_tuned_model

    question = [{"role": "user", "content": "What colour is the blue box?"}]
    reply = client.chat.completions.create(model=done.fine_tuned_model, messages=question, max_tokens=12,
                                           temperature=0)
    text = reply.choices[0].message.content
    assert reply.usage.completion_tokens > 0 and reply.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(model=done.fine_tuned_model, messages=question, max_tokens=12,
                                            temperature=0, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == text  # greedy: streamed and whole replies agree
    base = client.chat.completions.create(model="tunesmith/tiny-chat", messages=question, max_tokens=12,
                                          temperature=0)
    assert base.model == "tunesmith/tiny-chat" and base.choices[0].message.content is not None
    sampled = client.chat.completions.create(model=done.fine_tuned_model, messages=question, max_tokens=6,
                                             temperature=1.0, seed=3, n=2)
    again = client.chat.completions.create(model=done.fine_tuned_model, messages=question, max_tokens=6,
                                           temperature=1.0, seed=3, n=2)
    assert len(sampled.choices) == 2
    assert [c.message.content for c in sampled.choices] == [c.message.content for c in again.choices]

    client.models.delete(done.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(done.fine_tuned_model)


def test_pause_resume_and_cancel_a_running_job(client: openai.OpenAI, data_dir: Path) -> None:
    uploaded = client.files.create(file=(data_dir / "colours.jsonl").open("rb"), purpose="fine-tune")
    slow = {**FAST, "training.max_steps": 60, "training.batch_size": 2, "training.save_every": 1}
    job = client.fine_tuning.jobs.create(model="tunesmith/tiny-chat", training_file=uploaded.id,
                                         extra_body={"tunesmith": {"set": slow}})
    wait_for(lambda: list(client.fine_tuning.jobs.checkpoints.list(job.id)))
    assert client.fine_tuning.jobs.pause(job.id).id == job.id
    paused = wait_for(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status == "paused" and j)
    assert paused.fine_tuned_model is None
    saved = max(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=100))
    assert saved >= 1

    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    resumed = wait_for(lambda: [e for e in events(client, job.id) if "resuming at step" in e.message])
    assert f"resuming at step {saved}" in resumed[0].message
    wait_for(lambda: any(e.type == "metrics" and (e.data.get("step") or 0) > saved
                         for e in events(client, job.id)))
    client.fine_tuning.jobs.cancel(job.id)
    cancelled = finished(client, job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.resume(job.id)


def test_bad_files_are_rejected_with_the_line(client: openai.OpenAI, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": []}\n{"messages": [oops\n')
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=broken.open("rb"), purpose="fine-tune")
    assert "line 2" in caught.value.message

    no_reply = tmp_path / "no_reply.jsonl"
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
            {"messages": [{"role": "user", "content": "hi again"}]}]
    no_reply.write_text("".join(json.dumps(r) + "\n" for r in rows))
    uploaded = client.files.create(file=no_reply.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tunesmith/tiny-chat", training_file=uploaded.id)
    failed = finished(client, job.id)
    assert failed.status == "failed"
    assert failed.error.param == "training_file" and failed.error.code == "invalid_training_file"
    assert f"{uploaded.id} line 2" in failed.error.message and "assistant" in failed.error.message
