"""Training on several processes under torchrun: the pieces the one training loop calls.

N processes compute the update of one process with the same global batch:

- every rank builds the same seeded step plan (data/pack.py); each step's examples are dealt
  to the ranks by tokens and every rank packs its share into micro-batches (`shard_step`);
- every rank runs the same number of forward passes per step, a rank short of micro-batches
  running a filler pass with weight zero, so collectives inside the forward pass (FSDP2's
  all-gathers) always line up and a rank with no example of a short last step still joins;
- the trained units of the whole global step are all-reduced before the first backward, and
  each micro-batch's summed loss is scaled by world_size / units: DDP and FSDP2 average
  gradients over ranks, so the averaged gradient is exactly the single-process one;
- metric sums are all-reduced, so every rank takes the same decisions (divergence, best step,
  early stopping, stop requests) and rank 0 alone reports and writes.

Adapters (LoRA/DoRA) train under DDP. Full fine-tuning uses FSDP2 (`fully_shard`) on CUDA;
on CPU (gloo) it uses DDP, because FSDP2 is only built and checked for GPUs. Checkpoints of
multi-process runs are written with torch.distributed.checkpoint (DCP), which reshards on load,
so a run saved by N processes resumes with M, M=1 included (no process group needed).

This module holds the ranks and their collectives, each rank's share of the data and the
wrapped model; checkpoints in either layout are train/checkpoint_parallel.py, starting and
supervising the ranks train/launch.py.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.pack import Step, pack_indices
from tunesmith.errors import RecipeError, TunesmithError
from tunesmith.train.run import RunDir

TIMEOUT_ENV = "TUNESMITH_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600
"""How long a collective waits for a rank that neither answers nor dies (a rank that dies is
noticed by torchrun's agent within a second). Longer than any pause between collectives: rank 0
alone writing a checkpoint's trainer state or the final adapter."""

class PeerLost(TunesmithError):
    """A collective failed on this rank because another rank died or stopped answering."""


@dataclass(slots=True)
class Distributed:
    """Where this process stands: its rank among `world_size` processes on the group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    fsdp: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Distributed()


# --- the process group --------------------------------------------------------------------


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0, or a plain single process; readable before the process group exists (torchrun env)."""
    return int(os.environ.get("RANK", "0")) == 0


def collective_timeout() -> timedelta:
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        raise RecipeError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds", where=TIMEOUT_ENV) from None
    return timedelta(seconds=seconds)


def setup() -> Distributed:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE,
    MASTER_ADDR...); a plain process gets SINGLE and no group. CPU tensors go over gloo and
    CUDA tensors over NCCL, so the device a recipe picks later needs no other group."""
    world = env_world_size()
    if world <= 1:
        return SINGLE
    import torch.distributed as dist

    ctx = Distributed(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=collective_timeout())
        ctx.owns_group = True
        _exit_on_sigterm()
    return ctx


def _exit_on_sigterm() -> None:
    """torchrun's agent stops the other ranks with SIGTERM when one fails: unwind as an interrupt,
    so rank 0 marks the run and its registry job as interrupted instead of vanishing mid-write
    (train/stopping.py holds a second signal back while it does)."""
    from tunesmith.train.stopping import exit_on_sigterm

    exit_on_sigterm()


def teardown(ctx: Distributed) -> None:
    import torch.distributed as dist

    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def place(ctx: Distributed, device: torch.device) -> torch.device:
    """Each rank of a multi-GPU run gets its own GPU (LOCAL_RANK)."""
    if not ctx.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
        return device
    if device.type != "cpu":
        raise RecipeError(f"multi-process training runs on cuda or cpu, not {device.type}",
                          where="training.device", fix="set training.device to cuda or cpu")
    return device


def barrier(ctx: Distributed) -> None:
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def sum_metrics(ctx: Distributed, values: dict[str, float]) -> dict[str, float]:
    """Sums over all ranks (every rank must hold the same keys)."""
    if not ctx.enabled:
        return values
    import torch.distributed as dist

    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(tensor)
    return dict(zip(keys, tensor.tolist(), strict=True))


def agree(ctx: Distributed, flag: bool) -> bool:
    """True on every rank when it is true on any rank (a stop request seen by one)."""
    if not ctx.enabled:
        return flag
    return sum_metrics(ctx, {"flag": float(flag)})["flag"] > 0


def broadcast_text(ctx: Distributed, text: str | None) -> str:
    """Rank 0's text on every rank (sent as bytes: nothing is unpickled)."""
    if not ctx.enabled:
        return text or ""
    import torch.distributed as dist

    data = (text or "").encode("utf-8") if ctx.is_main else b""
    size = torch.tensor([len(data)], dtype=torch.long)
    dist.broadcast(size, src=0)
    buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8) if ctx.is_main else \
        torch.empty(int(size), dtype=torch.uint8)
    if int(size):
        dist.broadcast(buffer, src=0)
    return bytes(buffer.tolist()).decode("utf-8")


# --- the run directory: rank 0 writes, the others follow -------------------------------------


def share_run(ctx: Distributed, run: RunDir | None, recipe: Any) -> tuple[RunDir, Any]:
    """Rank 0 opened (or created) the run directory; every other rank gets the same folder,
    read-only, and exactly rank 0's recipe."""
    if not ctx.enabled:
        assert run is not None
        return run, recipe
    from tunesmith.recipe import build_recipe

    path = broadcast_text(ctx, str(run.path) if run is not None else None)
    text = broadcast_text(ctx, json.dumps(recipe.model_dump(mode="json")) if ctx.is_main else None)
    if run is not None:
        return run, recipe
    return FollowerRun(Path(path)), build_recipe(json.loads(text))


class FollowerRun(RunDir):
    """A rank > 0's view of the run directory: it reads, rank 0 writes."""

    def update_info(self, **fields: Any) -> None:
        pass

    def write_recipe(self, recipe: Any) -> None:
        pass

    def truncate_metrics(self, last_step: int) -> None:
        pass

    def require(self) -> None:
        pass  # rank 0 checks the folder and fails the run; the others then lose their peer


# --- data: each rank's share of a step ------------------------------------------------------

Share = list[tuple[list[int], bool]]
"""A rank's micro-batches as (example indices, real); a filler pass (real=False) counts zero."""


def deal(indices: Sequence[int], lengths: Sequence[int], world: int) -> list[list[int]]:
    """Examples to ranks, longest first to the rank with the fewest tokens so far (ties: lowest
    rank), so ranks do similar work. Deterministic: every rank computes every rank's share."""
    shares: list[list[int]] = [[] for _ in range(world)]
    load = [0] * world
    for index in sorted(indices, key=lambda i: (-lengths[i], i)):
        rank = min(range(world), key=lambda r: (load[r], r))
        shares[rank].append(index)
        load[rank] += lengths[index]
    return shares


def shard_examples(ctx: Distributed, indices: Sequence[int], lengths: Sequence[int], budget: int,
                   groups: Sequence[int] | None = None) -> Share:
    """This rank's packed micro-batches of `indices` (`groups` as in pack_indices), padded with
    fillers to the largest count any rank has. A single process packs exactly as before."""
    if not ctx.enabled:
        return [(micro, True) for micro in pack_indices(indices, lengths, budget, groups)]
    shares = deal(indices, lengths, ctx.world_size)
    packed = [pack_indices(share, lengths, budget, groups) for share in shares]
    mine: Share = [(micro, True) for micro in packed[ctx.rank]]
    filler = [min(indices, key=lambda i: (lengths[i], i))]  # the shortest example: the cheapest pass
    mine += [(filler, False)] * (max(len(p) for p in packed) - len(mine))
    return mine


def shard_step(ctx: Distributed, step: Step, lengths: Sequence[int], budget: int,
               groups: Sequence[int] | None = None) -> Share:
    """One optimizer step of the plan, this rank's part. Single process: the plan's own micro-batches."""
    if not ctx.enabled:
        return [(micro, True) for micro in step]
    return shard_examples(ctx, [i for micro in step for i in micro], lengths, budget, groups)


# --- the model: DDP for adapters, FSDP2 for full fine-tuning on GPUs ------------------------


class _ObjectiveModule(torch.nn.Module):
    """The objective's forward as a module, so DDP and FSDP2 see one forward per micro-batch
    (the objective reads hidden states and the LM head directly, not the model's forward)."""

    def __init__(self, model: torch.nn.Module, objective: Any):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return self.objective(self.model, batch)


class Parallel:
    """Runs the objective on a micro-batch: plainly, under DDP, or under FSDP2."""

    def __init__(self, ctx: Distributed, model: torch.nn.Module, objective: Any,
                 wrapped: torch.nn.Module | None = None):
        self.ctx = ctx
        self.model = model
        self.objective = objective
        self.wrapped = wrapped

    def __call__(self, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        if self.wrapped is None:
            return self.objective(self.model, batch)
        return self.wrapped(batch)

    @contextlib.contextmanager
    def no_sync(self, active: bool) -> Iterator[None]:
        """Accumulate gradients locally (no communication) while `active`: every micro-batch of a
        step but the last. Forward and backward both run inside."""
        if not active or self.wrapped is None:
            yield
        elif self.ctx.fsdp:
            self.wrapped.set_requires_gradient_sync(False)  # type: ignore[operator]
            try:
                yield
            finally:
                self.wrapped.set_requires_gradient_sync(True)  # type: ignore[operator]
        else:
            with self.wrapped.no_sync():  # type: ignore[operator]
                yield


def wrap(ctx: Distributed, model: torch.nn.Module, objective: Any, full: bool,
         device: torch.device) -> Parallel:
    """Call before the optimizer is built: FSDP2 replaces parameters by their shards."""
    if not ctx.enabled:
        return Parallel(ctx, model, objective)
    module = _ObjectiveModule(model, objective)
    if full and device.type == "cuda":
        # FSDP2: each decoder layer is a unit gathered for its own forward and backward; the rest
        # (embeddings, final norm, LM head) is the root unit, gathered by the wrapper's forward.
        # Checked only on GPU machines (docs/distributed.md).
        from torch.distributed.fsdp import fully_shard

        from tunesmith.model.adapters import decoder_layers

        for layer in decoder_layers(model):
            fully_shard(layer)
        fully_shard(module)
        ctx.fsdp = True
        return Parallel(ctx, model, objective, module)
    from torch.nn.parallel import DistributedDataParallel

    # Buffers (rotary frequencies) are equal on every rank; syncing them in every forward is a
    # collective that nothing needs (the keyword was renamed in newer PyTorch).
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    ddp = DistributedDataParallel(module, **{"forward_sync_buffers" if newer else "broadcast_buffers": False})
    return Parallel(ctx, model, objective, ddp)


def grad_norm_value(norm: torch.Tensor) -> float:
    """clip_grad_norm_'s result as a float; under FSDP2 it is a DTensor to gather first."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if callable(full) else norm)


# --- failures -------------------------------------------------------------------------------


PEER_LOST_GRACE_S = 3.0
"""How long a rank that lost contact with another waits before it exits, so torchrun's agent
(polling every fraction of a second) sees the rank that really failed first and stops this one."""

_TRANSPORT_ERRORS = ("connection reset", "connection closed", "broken pipe", "connection refused",
                     "timed out", "timeout", "nccl", "gloo", "socket")


def peer_lost(ctx: Distributed, exc: BaseException) -> PeerLost | None:
    """The error to raise instead of `exc` when it is a failed collective of a multi-process run
    (a lost peer, a timeout); None for anything else, which keeps its own traceback."""
    if not ctx.enabled or isinstance(exc, TunesmithError) or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if not any(word in text.lower() for word in _TRANSPORT_ERRORS):
        return None
    time.sleep(PEER_LOST_GRACE_S)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return PeerLost(f"rank {ctx.rank} lost contact with another training process: {first}",
                    where=f"rank {ctx.rank}",
                    fix="the rank that failed first has the error to read; if one hangs, collectives "
                        f"give up after {TIMEOUT_ENV} seconds (default {DEFAULT_TIMEOUT_S})")
