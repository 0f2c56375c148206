"""Duplicates and leakage: exact repeats, near repeats, and validation examples that
also appear in the training data.

Every example is reduced to two 64-bit fingerprints held in numpy uint64 arrays (16
bytes per example, so a million examples take 16 MB): a hash of the normalised text
for exact repeats, and a SimHash over word shingles for near repeats. Near repeats
are found by banding: with 4 bands of 16 bits, two signatures within Hamming distance
3 agree exactly on at least one band, so sorting by each band in turn brings every
such pair within a short window of each other.
"""

from __future__ import annotations

import hashlib
import string
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

MAX_DISTANCE = 3
BANDS = 4
BAND_BITS = 64 // BANDS
# How many neighbours in band order each signature is compared with. Pairs inside
# one band bucket are all compared when the bucket is smaller than this; a bigger
# bucket (thousands of near-identical templated examples) is compared by windows,
# which bounds the work at len(signatures) * BANDS * WINDOW comparisons.
WINDOW = 32
# Words per shingle. Single words: at a 3-bit threshold, 3-word shingles catch under
# 5% of one-word edits in a 40-word example and single words about 45%, while texts
# that differ in a third of their words still stay far apart (measured on random text).
SHINGLE = 1
_PAD = 1 << 32  # outside crc32's range, pads texts shorter than one shingle
_U64 = np.uint64
_PUNCTUATION = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))


def normalize(text: str) -> str:
    """Case and whitespace differences do not make two examples different."""
    return " ".join(text.casefold().split())


def exact_hash(text: str) -> int:
    """A stable 64-bit hash of the normalised text (the same in every run)."""
    digest = hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _word_ids(text: str, shingle: int) -> list[int]:
    """crc32 of every word, punctuation and case ignored (C-level loops: this runs per text)."""
    ids = list(map(zlib.crc32, text.casefold().encode("utf-8").translate(_PUNCTUATION).split()))
    return ids + [_PAD] * (shingle - len(ids)) if len(ids) < shingle else ids


def _mix(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads every input bit over all 64 output bits."""
    values = values ^ (values >> _U64(30))
    values = values * _U64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> _U64(27))
    values = values * _U64(0x94D049BB133111EB)
    return values ^ (values >> _U64(31))


def simhashes(texts: Iterable[str], shingle: int = SHINGLE) -> np.ndarray:
    """64-bit SimHash signatures over word shingles, computed for a batch at once."""
    ids: list[int] = []
    counts: list[int] = []
    for text in texts:
        words = _word_ids(text, shingle)
        ids += words
        counts.append(len(words))
    if not counts:
        return np.zeros(0, dtype=_U64)
    words = np.asarray(ids, dtype=_U64)
    sizes = np.asarray(counts, dtype=np.int64) - (shingle - 1)
    starts = np.cumsum(counts) - counts
    # Position of every shingle's first word, never crossing into the next text.
    first = np.repeat(starts, sizes) + _ranks(sizes)
    shingles = np.zeros(len(first), dtype=_U64)
    for offset in range(shingle):
        shingles = _mix(shingles ^ words[first + offset])
    bits = np.unpackbits(shingles.view(np.uint8).reshape(-1, 8), axis=1)
    offsets = np.cumsum(sizes) - sizes
    ones = np.add.reduceat(bits, offsets, axis=0, dtype=np.int32)
    majority = (ones * 2 > sizes[:, None]).astype(np.uint8)
    return np.packbits(majority, axis=1).view(_U64).reshape(-1)


def simhash(text: str) -> int:
    return int(simhashes([text])[0])


def _ranks(sizes: np.ndarray) -> np.ndarray:
    """0, 1, ..., size-1 for every size, concatenated."""
    total = int(sizes.sum())
    return np.arange(total) - np.repeat(np.cumsum(sizes) - sizes, sizes)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    return np.bitwise_count(np.asarray(a, dtype=_U64) ^ np.asarray(b, dtype=_U64))


@dataclass(slots=True)
class Fingerprints:
    """Fingerprints of a stream of texts, grown in chunks so memory stays 16 bytes each."""

    exact: np.ndarray
    near: np.ndarray

    @classmethod
    def empty(cls) -> Fingerprints:
        return cls(np.zeros(0, dtype=_U64), np.zeros(0, dtype=_U64))

    def __len__(self) -> int:
        return len(self.exact)


class FingerprintBuilder:
    """Collects fingerprints text by text; signatures are computed a batch at a time."""

    def __init__(self, batch: int = 2048):
        self._batch = batch
        self._exact: list[int] = []
        self._near_texts: list[str] = []
        self._chunks: list[tuple[np.ndarray, np.ndarray]] = []

    def add(self, exact_text: str, near_text: str | None = None) -> None:
        """`near_text` may leave out parts shared by every example (a system prompt)."""
        self._exact.append(exact_hash(exact_text))
        self._near_texts.append(exact_text if near_text is None else near_text)
        if len(self._exact) >= self._batch:
            self._flush()

    def _flush(self) -> None:
        if self._exact:
            self._chunks.append((np.asarray(self._exact, dtype=_U64), simhashes(self._near_texts)))
            self._exact, self._near_texts = [], []

    def finish(self) -> Fingerprints:
        self._flush()
        if not self._chunks:
            return Fingerprints.empty()
        exact = np.concatenate([chunk[0] for chunk in self._chunks])
        near = np.concatenate([chunk[1] for chunk in self._chunks])
        self._chunks = []
        return Fingerprints(exact, near)


# --- exact ---------------------------------------------------------------------------


def exact_duplicates(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(repeat, first): indices of every repeated example and of its first occurrence,
    ordered by repeat."""
    order = np.argsort(hashes, kind="stable")
    ranked = hashes[order]
    starts = np.ones(len(ranked), dtype=bool)
    starts[1:] = ranked[1:] != ranked[:-1]
    first = order[starts][np.cumsum(starts) - 1]
    repeat, first = order[~starts], first[~starts]
    by_repeat = np.argsort(repeat, kind="stable")
    return repeat[by_repeat], first[by_repeat]


def exact_overlap(train: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(other_index, train_index) for every example of `other` whose text is in `train`
    (the first training occurrence)."""
    if len(train) == 0 or len(other) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = np.argsort(train, kind="stable")
    ranked = train[order]
    slot = np.minimum(np.searchsorted(ranked, other), len(ranked) - 1)
    found = np.flatnonzero(ranked[slot] == other)
    return found, order[slot[found]]


# --- near ----------------------------------------------------------------------------


def _rotate(signatures: np.ndarray, band: int) -> np.ndarray:
    """Bring band `band` to the top bits, so sorting groups by that band first."""
    shift = band * BAND_BITS
    if shift == 0:
        return signatures
    return (signatures << _U64(shift)) | (signatures >> _U64(64 - shift))


def _close_pairs(signatures: np.ndarray, max_distance: int, window: int):
    """Yield (a, b) index arrays of pairs within `max_distance`, band by band."""
    for band in range(BANDS):
        keys = _rotate(signatures, band)
        order = np.argsort(keys, kind="stable")
        ranked = keys[order]
        bucket = ranked >> _U64(64 - BAND_BITS)
        for step in range(1, min(window, len(ranked) - 1) + 1):
            same = bucket[:-step] == bucket[step:]
            if not same.any():
                break  # sorted: no pair `step` apart shares a bucket, none further does
            close = same & (np.bitwise_count(ranked[:-step] ^ ranked[step:]) <= max_distance)
            hits = np.flatnonzero(close)
            if len(hits):
                yield order[hits], order[hits + step]


def near_duplicates(prints: Fingerprints, max_distance: int = MAX_DISTANCE,
                    window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(repeat, earlier): examples whose signature is within `max_distance` of an earlier
    example's, leaving out exact repeats (reported as such)."""
    count = len(prints)
    earlier = np.full(count, count, dtype=np.int64)
    for a, b in _close_pairs(prints.near, max_distance, window):
        keep = prints.exact[a] != prints.exact[b]
        a, b = a[keep], b[keep]
        low, high = np.minimum(a, b), np.maximum(a, b)
        # Within one step every index appears at most once on each side, so a plain
        # fancy-index update is safe (no repeated targets).
        for side in (a == high, b == high):
            targets = high[side]
            earlier[targets] = np.minimum(earlier[targets], low[side])
    repeat, _ = exact_duplicates(prints.exact)
    found = earlier < count
    found[repeat] = False
    repeat_idx = np.flatnonzero(found)
    return repeat_idx, earlier[repeat_idx]


def near_overlap(train: Fingerprints, other: Fingerprints, max_distance: int = MAX_DISTANCE,
                 window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(other_index, train_index) for examples of `other` nearly the same as a training
    example, leaving out exact overlaps."""
    n_train = len(train)
    if n_train == 0 or len(other) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    signatures = np.concatenate([train.near, other.near])
    hashes = np.concatenate([train.exact, other.exact])
    match = np.full(len(other), n_train, dtype=np.int64)
    for a, b in _close_pairs(signatures, max_distance, window):
        keep = ((a < n_train) != (b < n_train)) & (hashes[a] != hashes[b])
        a, b = a[keep], b[keep]
        for mine, theirs in ((a, b), (b, a)):
            side = mine >= n_train
            targets = mine[side] - n_train
            match[targets] = np.minimum(match[targets], theirs[side])
    exact_found, _ = exact_overlap(train.exact, other.exact)
    found = match < n_train
    found[exact_found] = False
    other_idx = np.flatnonzero(found)
    return other_idx, match[other_idx]
