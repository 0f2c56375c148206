"""Checkpoints that survive a crash at any instant.

A checkpoint is written into a temporary folder, every file fsynced, the COMPLETE marker
written (it lists each file's size, so a checkpoint whose files were cut short later is
skipped too), and only then is the folder renamed into place: a `step-N` folder is complete
from the moment it has its name. Saving a step that already has a checkpoint (a resumed run
stopping where it started) moves the old copy aside, renames the new one in, then deletes
the old one; if the process dies between the two renames the old copy still counts. Old
checkpoints are pruned to keep-last-N, never touching the best one or the only complete one.

`complete_checkpoints` is the one notion of a complete checkpoint, for training and the registry
alike; torch is imported only where tensors are written or read, so reading a run folder needs none.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.fsutil import atomic_write_text, fsync_dir

if TYPE_CHECKING:
    import torch

MARKER = "COMPLETE"
WEIGHTS = "trainable.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "trainer_state.json"
PREFIX = "step-"
OLD = ".old-"
"""A complete checkpoint moved aside while the same step is saved again."""


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
    import torch

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, step: int, weights: dict[str, torch.Tensor], optimizer: dict[str, Any],
                    trainer_state: dict[str, Any]) -> Checkpoint:
    import torch
    from safetensors.torch import save_file

    tmp = temp_folder(folder, step, str(os.getpid()))
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp / WEIGHTS)
    torch.save({"optimizer": optimizer, "rng": rng_state()}, tmp / OPTIMIZER)
    return seal(folder, tmp, step, trainer_state)


def temp_folder(folder: Path, step: int, tag: str) -> Path:
    """A fresh, empty folder that a checkpoint is written into before `seal` moves it into place.
    The run folder holding `folder` must exist: a deleted run is never re-created here."""
    folder.mkdir(exist_ok=True)
    tmp = folder / f".tmp-{checkpoint_name(step)}-{tag}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def seal(folder: Path, tmp: Path, step: int, trainer_state: dict[str, Any]) -> Checkpoint:
    """Write the trainer state, fsync every file, write the COMPLETE marker listing every file's
    size (files in sub-folders by relative path), then rename the folder into place; an
    existing checkpoint of the same step is removed only once the new one has its name."""
    (tmp / STATE).write_text(json.dumps(trainer_state, indent=1))
    files = sorted(f for f in tmp.rglob("*") if f.is_file())
    for file in files:
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
    sizes = {f.relative_to(tmp).as_posix(): f.stat().st_size for f in files}
    atomic_write_text(tmp / MARKER, json.dumps({"step": step, "files": sizes}))
    final = folder / checkpoint_name(step)
    old = folder / f"{OLD}{checkpoint_name(step)}-{os.getpid()}"
    replacing = final.exists()
    if replacing:
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(folder)
    if replacing:
        shutil.rmtree(old, ignore_errors=True)
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


def _step_of(name: str) -> int | None:
    """The step of `step-N`, or of `.old-step-N-PID` (a copy moved aside); None for anything else."""
    if name.startswith(OLD):
        name = name[len(OLD):].rsplit("-", 1)[0]
    digits = name[len(PREFIX):]
    return int(digits) if name.startswith(PREFIX) and digits.isdigit() else None


def complete_checkpoints(folder: Path) -> list[Checkpoint]:
    """Complete checkpoints, oldest first: `step-N`, or the copy of step N moved aside when the
    process died while saving that step again."""
    if not folder.exists():
        return []
    found: dict[int, Checkpoint] = {}
    for path in sorted(folder.iterdir(), key=lambda p: p.name.startswith(OLD)):  # step-N first
        step = _step_of(path.name)
        if step is not None and step not in found and is_complete(path):
            found[step] = Checkpoint(path, step)
    return sorted(found.values(), key=lambda c: c.step)


def latest_checkpoint(folder: Path) -> Checkpoint | None:
    complete = complete_checkpoints(folder)
    return complete[-1] if complete else None


def load_checkpoint(checkpoint: Checkpoint) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """Weights, optimizer+rng and trainer state; weights_only loading never runs pickled code."""
    import torch
    from safetensors.torch import load_file

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
    kept = {c.path for c in complete if c not in removable}
    for path in folder.iterdir() if folder.exists() else []:
        stale_tmp = path.name.startswith(".tmp-")
        unused = _step_of(path.name) is not None and path not in kept  # broken, or a superseded copy
        if (stale_tmp or unused) and newest is not None:
            shutil.rmtree(path, ignore_errors=True)
