"""Packing: rendered examples into padding-free micro-batches.

An optimizer step takes `batch_size` examples (the hosted APIs' meaning of batch size);
those examples are packed into as few micro-batches of at most `micro_batch_tokens`
tokens as fit, each a single row with position ids restarting at every example, so the
attention implementation keeps examples apart and no compute is spent on padding.
Gradient accumulation falls out: a step is as many forward passes as its micro-batches.
The plan depends only on (lengths, batch_size, budget, seed, epoch), so a resumed run
replays exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tunesmith.errors import DataError

if TYPE_CHECKING:
    import torch

    from tunesmith.data.render import RenderedExample

IGNORE_INDEX = -100

Step = list[list[int]]
"""One optimizer step: its micro-batches, each a list of example indices."""


def epoch_order(count: int, seed: int, epoch: int) -> list[int]:
    """A seeded shuffle of example indices, different every epoch, same on every resume."""
    return np.random.default_rng([seed, epoch]).permutation(count).tolist()


def pack_indices(indices: Sequence[int], lengths: Sequence[int], budget: int,
                 groups: Sequence[int] | None = None) -> list[list[int]]:
    """First-fit-decreasing bin packing of examples into micro-batches of <= budget tokens;
    with `groups` (a group number per example), only examples of one group share a micro-batch."""
    if groups is not None:
        return [micro for group in sorted({groups[i] for i in indices})
                for micro in pack_indices([i for i in indices if groups[i] == group], lengths, budget)]
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(indices, key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        if length > budget:
            raise DataError(f"an example of {length} tokens is longer than micro_batch_tokens={budget}",
                            fix="raise training.micro_batch_tokens to at least data.max_length")
        for slot, free in enumerate(room):
            if length <= free:
                bins[slot].append(index)
                room[slot] -= length
                break
        else:
            bins.append([index])
            room.append(budget - length)
    return bins


def plan_epoch(lengths: Sequence[int], batch_size: int, budget: int, seed: int, epoch: int,
               groups: Sequence[int] | None = None) -> list[Step]:
    """Every optimizer step of one epoch, as micro-batches of example indices (see `groups`
    in `pack_indices`)."""
    order = epoch_order(len(lengths), seed, epoch)
    return [pack_indices(order[i : i + batch_size], lengths, budget, groups)
            for i in range(0, len(order), batch_size)]


def pack_groups(examples: Sequence[object]) -> list[int] | None:
    """Replayed (distilled) examples are packed apart from the task's: they do not share its
    system prompt, so a row of one kind can hold its common prefix once (`collate_packed`), and
    the base model's pass for distilled targets covers whole rows. None where there is no replay."""
    flags = [int(getattr(e, "distill", False)) for e in examples]
    return flags if any(flags) else None


SHARED_PREFIX_MIN = 8
"""A common untrained prefix (a shared system prompt) shorter than this is not worth sharing."""


@dataclass(slots=True)
class PackedBatch:
    """One micro-batch: a single row of concatenated examples.

    With `shared_prefix` = P > 0 the examples all begin with the same P untrained tokens (a
    shared system prompt, say), and the row holds them once: the prefix, then each example's
    remaining tokens with position ids continuing at P. Attention lets every example see the
    prefix and itself (train/loss.py), so the result is that of the full row without computing
    the prefix once per example."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    num_examples: int
    shared_prefix: int = 0
    distill: torch.Tensor | None = None
    """Aligned with `labels`: True where the target is the base model's next-token
    distribution instead of the label (examples with `distill` set); None when none is."""

    @property
    def num_tokens(self) -> int:
        """Tokens of the examples the batch holds (a shared prefix counts once per example)."""
        return int(self.input_ids.numel()) + self.shared_prefix * max(self.num_examples - 1, 0)

    @property
    def num_trained(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device),
                           self.labels.to(device), self.num_examples, self.shared_prefix,
                           self.distill.to(device) if self.distill is not None else None)

    def _spans(self) -> list[tuple[int, int]]:
        """[start, end) of each example after the shared prefix (of each segment, where
        positions restart inside an example: segments attend only to themselves too)."""
        starts = (self.position_ids[0] == self.shared_prefix).nonzero().flatten().tolist()
        return list(zip(starts, [*starts[1:], self.position_ids.shape[1]], strict=True))

    def _cut(self, spans: list[tuple[int, int]], repeat_prefix: bool, examples: int) -> PackedBatch:
        import torch

        prefix = self.shared_prefix

        def take(row: torch.Tensor) -> torch.Tensor:
            if repeat_prefix:  # the prefix in front of every example
                parts = [part for a, b in spans for part in (row[:, :prefix], row[:, a:b])]
            else:  # the prefix once, then the examples
                parts = [row[:, :prefix]] + [row[:, a:b] for a, b in spans]
            return torch.cat(parts, dim=1)

        distill = take(self.distill) if self.distill is not None else None
        return PackedBatch(take(self.input_ids), take(self.position_ids), take(self.labels), examples,
                           0 if repeat_prefix else prefix, distill)

    def unshared(self) -> PackedBatch:
        """The same examples with the prefix repeated in each: the plain packed row."""
        if not self.shared_prefix:
            return self
        return self._cut(self._spans(), True, self.num_examples)

    def distilled_only(self) -> PackedBatch:
        """The row cut to its examples with distilled targets (and the shared prefix they see).
        Examples in a packed row attend only to themselves and the prefix, so the base model's
        distributions at those targets are the same in this shorter row, in the same order."""
        assert self.distill is not None
        spans = [(a, b) for a, b in self._spans() if bool(self.distill[0, a:b].any())]
        return self._cut(spans, False, len(spans))


def shared_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence shares, each keeping at least one token after
    them (packing's shared prefix here, generation's shared prefill)."""
    first = sequences[0]
    length = min(len(s) for s in sequences) - 1
    for ids in sequences[1:]:
        length = next((i for i in range(length) if ids[i] != first[i]), length)
    return max(length, 0)


def common_prefix(examples: Sequence[RenderedExample]) -> int:
    """Length of the untrained token prefix all examples share (each keeping at least one token
    after it), or 0 where it is shorter than SHARED_PREFIX_MIN or an example has segments."""
    if len(examples) < 2 or any(e.segments for e in examples):
        return 0
    length = shared_length([e.input_ids for e in examples])
    for example in examples:  # only untrained tokens are shared: a trained one counts per example
        mask = example.loss_mask
        length = next((i for i in range(length) if mask[i]), length)
    return length if length >= SHARED_PREFIX_MIN else 0


def collate_packed(examples: Sequence[RenderedExample], share_prefix: bool = False) -> PackedBatch:
    """One packed row; with `share_prefix`, a common untrained prefix is held once (see PackedBatch)."""
    import torch

    prefix = common_prefix(examples) if share_prefix else 0
    ids: list[int] = list(examples[0].input_ids[:prefix]) if prefix else []
    positions: list[int] = list(range(prefix))
    labels: list[int] = [IGNORE_INDEX] * prefix
    distill: list[bool] = [False] * prefix
    for example in examples:
        ids += example.input_ids[prefix:]
        positions += example.positions()[prefix:]
        labels += [t if m else IGNORE_INDEX
                   for t, m in zip(example.input_ids[prefix:], example.loss_mask[prefix:], strict=True)]
        distill += [bool(m) and example.distill for m in example.loss_mask[prefix:]]
    return PackedBatch(
        torch.tensor([ids], dtype=torch.long),
        torch.tensor([positions], dtype=torch.long),
        torch.tensor([labels], dtype=torch.long),
        len(examples),
        prefix,
        torch.tensor([distill], dtype=torch.bool) if any(e.distill for e in examples) else None,
    )


def collate_padded(examples: Sequence[RenderedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded rows with an attention mask: the classic layout, used to check packing."""
    import torch

    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example)
        ids[row, :n] = torch.tensor(example.input_ids)
        attention[row, :n] = 1
        labels[row, :n] = torch.tensor(
            [t if m else IGNORE_INDEX for t, m in zip(example.input_ids, example.loss_mask, strict=True)])
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


@dataclass(frozen=True, slots=True)
class PackingStats:
    """How much compute padding would waste, against packing the same steps."""

    padded_waste: float
    packed_fill: float
    micro_batches_padded: int
    micro_batches_packed: int


def packing_stats(lengths: Sequence[int], batch_size: int, budget: int, seed: int = 0) -> PackingStats:
    """Padded batching pads every row of a micro-batch to its longest example; packing
    concatenates. Both take the same steps of one epoch."""
    if not lengths:
        return PackingStats(0.0, 0.0, 0, 0)
    order = epoch_order(len(lengths), seed, 0)
    real = float(sum(lengths))
    padded_cells = 0
    padded_batches = 0
    packed_batches = 0
    for i in range(0, len(order), batch_size):
        step = order[i : i + batch_size]
        # The padded layout fits as many rows per micro-batch as the token budget allows.
        rows = max(1, budget // max(lengths[j] for j in step))
        for k in range(0, len(step), rows):
            chunk = step[k : k + rows]
            padded_cells += max(lengths[j] for j in chunk) * len(chunk)
            padded_batches += 1
        packed_batches += len(pack_indices(step, lengths, max(budget, max(lengths[j] for j in step))))
    return PackingStats(
        padded_waste=1 - real / padded_cells,
        packed_fill=real / (packed_batches * budget),
        micro_batches_padded=padded_batches,
        micro_batches_packed=packed_batches,
    )
