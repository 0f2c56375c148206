"""Several whole sequences in one padding-free row, with the bookkeeping that objectives over
sequences (preference pairs, sampled completions, reward scores) need: which sequence each
trained token belongs to, and where each sequence's last trained token sits."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from tunesmith.data.pack import IGNORE_INDEX


@dataclass(slots=True)
class SequenceBatch:
    input_ids: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    token_seq: torch.Tensor
    """Sequence index of every trained token (labels[:, 1:] != IGNORE_INDEX), in row order."""
    last_trained: torch.Tensor
    """Row position of each sequence's last trained token."""
    num_seqs: int
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    shared_prefix: int = 0
    """P > 0: the row starts with an untrained prefix of P tokens held once, which every
    sequence continues (`collate_continuations`)."""

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.numel())

    def to(self, device: torch.device | str) -> SequenceBatch:
        return replace(self, input_ids=self.input_ids.to(device), position_ids=self.position_ids.to(device),
                       labels=self.labels.to(device), token_seq=self.token_seq.to(device),
                       last_trained=self.last_trained.to(device),
                       extra={k: v.to(device) for k, v in self.extra.items()})


def collate_sequences(sequences: Sequence[tuple[Sequence[int], Sequence[int]]]) -> SequenceBatch:
    """Pack (token ids, loss mask) pairs into one row; positions restart per sequence."""
    ids: list[int] = []
    positions: list[int] = []
    labels: list[int] = []
    token_seq: list[int] = []
    last: list[int] = []
    for index, (seq_ids, mask) in enumerate(sequences):
        offset = len(ids)
        ids += seq_ids
        positions += range(len(seq_ids))
        # The first token of a sequence is never trained: in a packed row nothing before it is its own.
        trained = [t for t, m in enumerate(mask) if m and t > 0]
        row_labels = [IGNORE_INDEX] * len(seq_ids)
        for t in trained:
            row_labels[t] = seq_ids[t]
        labels += row_labels
        token_seq += [index] * len(trained)
        last.append(offset + (trained[-1] if trained else len(seq_ids) - 1))
    return SequenceBatch(torch.tensor([ids]), torch.tensor([positions]), torch.tensor([labels]),
                         torch.tensor(token_seq, dtype=torch.long), torch.tensor(last, dtype=torch.long),
                         len(sequences))


def collate_continuations(prefix: Sequence[int], continuations: Sequence[Sequence[int]]) -> SequenceBatch:
    """One row holding `prefix` once, then each continuation of it, every continuation token
    trained: the same sequences as `collate_sequences` of (prefix + continuation) pairs with
    the prefix untrained, for the decoder work of one prefix instead of one per continuation
    (a GRPO group's prompt). Continuations' positions start at len(prefix), so train/loss.py's
    per-example attention lets each see the prefix and itself; a continuation's first token is
    predicted from the prefix's last position (token_logprobs' `shared_prefix`)."""
    if not prefix or any(not c for c in continuations):
        raise ValueError("a shared prefix and every continuation need at least one token")
    size = len(prefix)
    ids, positions = list(prefix), list(range(size))
    labels = [IGNORE_INDEX] * size
    token_seq: list[int] = []
    last: list[int] = []
    for index, tokens in enumerate(continuations):
        ids += tokens
        positions += range(size, size + len(tokens))
        labels += tokens
        token_seq += [index] * len(tokens)
        last.append(len(ids) - 1)
    return SequenceBatch(torch.tensor([ids]), torch.tensor([positions]), torch.tensor([labels]),
                         torch.tensor(token_seq, dtype=torch.long), torch.tensor(last, dtype=torch.long),
                         len(continuations), shared_prefix=size)
