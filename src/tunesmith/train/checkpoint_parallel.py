"""Checkpoints of a run on one process or several: the layout of train/checkpoint.py (safetensors)
on one process, torch.distributed.checkpoint (DCP) on several, which reshards on load, so a run
saved by N processes resumes with M (M=1 included, no process group needed). Either way rank 0
seals the folder with train/checkpoint.py's COMPLETE marker, the one notion of a complete
checkpoint."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import TunesmithError
from tunesmith.train import checkpoint as ckpt
from tunesmith.train.distributed import Distributed, barrier

DCP_FOLDER = "dcp"


def _dcp_options() -> Any:
    """Trained tensors only (frozen base weights come from the base model). Not strict: the model
    holds frozen tensors the checkpoint leaves out; a trained tensor missing from a checkpoint
    still fails, in dcp.load."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, strict=False)


def save_checkpoint(ctx: Distributed, folder: Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, trainer_state: dict[str, Any]) -> ckpt.Checkpoint:
    """A single process keeps the safetensors layout (train/checkpoint.py). Several processes
    write trained weights and optimizer state with DCP, each rank its own part (DDP: rank 0
    writes the one replica), and each rank its RNG state; rank 0 seals the folder as usual: fsync,
    COMPLETE marker, rename. Every rank returns the same Checkpoint."""
    from tunesmith.model.adapters import trainable_state

    if not ctx.enabled:
        return ckpt.save_checkpoint(folder, step, trainable_state(model), optimizer.state_dict(),
                                    trainer_state)
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp = folder / f".tmp-{ckpt.checkpoint_name(step)}-dist"
    if ctx.is_main:
        tmp = ckpt.temp_folder(folder, step, "dist")
    barrier(ctx)
    model_state, optimizer_state = get_state_dict(model, optimizer, options=_dcp_options())
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / DCP_FOLDER)
    torch.save(ckpt.rng_state(), tmp / f"rng-{ctx.rank}.pt")
    barrier(ctx)
    if ctx.is_main:
        ckpt.seal(folder, tmp, step, {**trainer_state, "world_size": ctx.world_size})
    barrier(ctx)
    return ckpt.Checkpoint(folder / ckpt.checkpoint_name(step), step)


def restore(ctx: Distributed, checkpoint: ckpt.Checkpoint, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a checkpoint written by any number of processes into this run; returns the trainer
    state. DCP reshards to this world size; RNG states come back per rank where the rank existed."""
    from tunesmith.model.adapters import load_trainable_state

    if not (checkpoint.path / DCP_FOLDER).exists():
        if ctx.fsdp:
            raise TunesmithError(
                "a single-process full fine-tuning checkpoint cannot be loaded into FSDP2 shards",
                where=str(checkpoint.path), fix="resume it with one process, or start the run with --nproc")
        weights, extra, state = ckpt.load_checkpoint(checkpoint)
        load_trainable_state(model, weights)
        optimizer.load_state_dict(extra["optimizer"])
        ckpt.restore_rng(extra["rng"])
        return state
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer, options=_dcp_options())
    state = {"model": model_state, "optimizer": optimizer_state}
    with warnings.catch_warnings():  # loading without a process group is what is meant here
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(state, checkpoint_id=checkpoint.path / DCP_FOLDER, no_dist=not ctx.enabled)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=_dcp_options())
    rng = checkpoint.path / f"rng-{ctx.rank}.pt"
    if rng.exists():
        ckpt.restore_rng(torch.load(rng, weights_only=True))
    return checkpoint.state


def save_final(ctx: Distributed, model: torch.nn.Module, tokenizer: Any, tmp: Path, final: Path) -> None:
    """The trained adapter or model, written by rank 0 into `tmp` and renamed to `final`.
    Under FSDP2 the full weights are gathered first (a collective every rank joins)."""
    from tunesmith.model.adapters import save_final as save_folder

    state = None
    if ctx.fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if ctx.is_main:
        if state is None:
            save_folder(model, tokenizer, tmp)
        else:
            tmp.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    barrier(ctx)
