"""Checkpoints that survive a crash at any instant.

A checkpoint is written into a temporary folder, every file fsynced, the folder renamed
into place, and only then is the COMPLETE marker written. The marker lists each file's
size, so a checkpoint whose files were cut short later is skipped too. Old checkpoints
are pruned to keep-last-N, never touching the best one or the only complete one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tunesmith.fsutil import atomic_write_text, fsync_dir

MARKER = "COMPLETE"
WEIGHTS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "trainer_state.json"
PREFIX = "step-"


@dataclass(slots=True)
class Checkpoint:
    path: Path
    step: int

    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.path / STATE).read_text())


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, step: int, weights: dict[str, torch.Tensor], optimizer: dict[str, Any],
                    trainer_state: dict[str, Any]) -> Checkpoint:
    tmp = temp_folder(folder, step, str(os.getpid()))
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp / WEIGHTS)
    torch.save({"optimizer": optimizer, "rng": rng_state()}, tmp / OPTIMIZER)
    return seal(folder, tmp, step, trainer_state)


def temp_folder(folder: Path, step: int, tag: str) -> Path:
    """A fresh, empty folder that a checkpoint is written into before `seal` moves it into place."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{checkpoint_name(step)}-{tag}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def seal(folder: Path, tmp: Path, step: int, trainer_state: dict[str, Any]) -> Checkpoint:
    """Write the trainer state, fsync every file, rename the folder into place, then write the
    COMPLETE marker listing every file's size (files in sub-folders by relative path)."""
    (tmp / STATE).write_text(json.dumps(trainer_state, indent=1))
    files = sorted(f for f in tmp.rglob("*") if f.is_file())
    for file in files:
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
    final = folder / checkpoint_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(folder)
    sizes = {f.relative_to(final).as_posix(): f.stat().st_size
             for f in sorted(final.rglob("*")) if f.is_file()}
    atomic_write_text(final / MARKER, json.dumps({"step": step, "files": sizes}))
    return Checkpoint(final, step)


def is_complete(path: Path) -> bool:
    marker = path / MARKER
    if not marker.exists():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all((path / name).exists() and (path / name).stat().st_size == size
               for name, size in files.items())


def complete_checkpoints(folder: Path) -> list[Checkpoint]:
    """Complete checkpoints, oldest first."""
    if not folder.exists():
        return []
    found = []
    for path in folder.iterdir():
        if path.name.startswith(PREFIX) and path.name[len(PREFIX):].isdigit() and is_complete(path):
            found.append(Checkpoint(path, int(path.name[len(PREFIX):])))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    complete = complete_checkpoints(folder)
    return complete[-1] if complete else None


def load_checkpoint(checkpoint: Checkpoint) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Weights, optimizer+rng and trainer state; weights_only loading never runs pickled code."""
    weights = load_file(checkpoint.path / WEIGHTS)
    extra = torch.load(checkpoint.path / OPTIMIZER, weights_only=True)
    return weights, extra, checkpoint.state


def prune(folder: Path, keep: int, protect: frozenset[int] | set[int] = frozenset()) -> None:
    """Drop old complete checkpoints beyond `keep` (never a protected step, never the
    newest complete one) and leftovers of interrupted writes."""
    complete = complete_checkpoints(folder)
    newest = complete[-1].step if complete else None
    removable = [c for c in complete[:-keep] if c.step not in protect and c.step != newest] if keep else []
    for checkpoint in removable:
        shutil.rmtree(checkpoint.path, ignore_errors=True)
    steps = {c.step for c in complete}
    for path in folder.iterdir() if folder.exists() else []:
        stale_tmp = path.name.startswith(".tmp-")
        broken = path.name.startswith(PREFIX) and path.name[len(PREFIX):].isdigit() \
            and int(path.name[len(PREFIX):]) not in steps
        if (stale_tmp or broken) and newest is not None:
            shutil.rmtree(path, ignore_errors=True)
