"""Fingerprints, exact and near duplicates, and train/validation overlap."""

from __future__ import annotations

import random

import numpy as np

from tunesmith.data.dedup import (
    FingerprintBuilder,
    Fingerprints,
    exact_duplicates,
    exact_hash,
    exact_overlap,
    hamming,
    near_duplicates,
    near_overlap,
    simhash,
    simhashes,
)

WORDS = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "ru", "sa", "to", "vi") for b in
         ("bar", "den", "fik", "gol", "hup", "jet", "kor", "lum", "mox", "nip", "pes", "quo")]


def texts(count: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(count)]


def prints_of(items: list[str]) -> Fingerprints:
    builder = FingerprintBuilder(batch=7)  # several batches, so flushing is exercised
    for item in items:
        builder.add(item)
    return builder.finish()


def with_bits_flipped(value: int, bits: list[int]) -> int:
    for bit in bits:
        value ^= 1 << bit
    return value


def test_exact_hash_ignores_case_and_spacing_only() -> None:
    assert exact_hash("Hello   World\n") == exact_hash("hello world")
    assert exact_hash("hello world") != exact_hash("hello world!")


def test_simhash_is_stable_and_separates_unrelated_texts() -> None:
    first, other = texts(2, 40, seed=1)
    assert simhash(first) == simhash(first)
    assert int(hamming(simhash(first), simhash(first.upper() + " !"))) == 0
    assert int(hamming(simhash(first), simhash(other))) > 10
    batch = simhashes([first, other, "x"])
    assert batch.dtype == np.uint64 and batch.tolist() == [simhash(first), simhash(other),
                                                           simhash("x")]


def test_exact_duplicates_point_at_the_first_occurrence() -> None:
    items = ["a b c", "d e f", "A  B c", "g h i", "d e f", "a b c"]
    repeat, first = exact_duplicates(prints_of(items).exact)
    assert repeat.tolist() == [2, 4, 5]
    assert first.tolist() == [0, 1, 0]


def test_near_duplicates_by_hamming_distance() -> None:
    rng = np.random.default_rng(0)
    base = int(rng.integers(0, 2**63, dtype=np.uint64))
    # Random signatures stand in for texts: distances are exactly what we set.
    signatures = [base, with_bits_flipped(base, [0, 20, 40]),
                  with_bits_flipped(base, [1, 21, 41, 61])]
    signatures += [int(x) for x in rng.integers(0, 2**63, size=50, dtype=np.uint64)]
    near = np.asarray(signatures, dtype=np.uint64)
    exact = np.arange(len(near), dtype=np.uint64)  # all texts differ
    repeat, earlier = near_duplicates(Fingerprints(exact, near))
    assert 1 in repeat.tolist()
    assert earlier[repeat.tolist().index(1)] == 0
    assert 2 not in repeat.tolist()  # 4 bits away from 0, 7 from 1


def test_exact_repeats_are_not_also_near_repeats() -> None:
    items = ["the same text here", "The same  text here", "the same text here!"]
    prints = prints_of(items)
    repeat, _ = exact_duplicates(prints.exact)
    near, earlier = near_duplicates(prints)
    assert repeat.tolist() == [1]
    assert near.tolist() == [2] and earlier.tolist() == [0]


def test_near_duplicates_in_a_bucket_bigger_than_the_window() -> None:
    # 300 signatures share every band value with their neighbours: one huge bucket.
    base = 0x0F0F_F0F0_1234_ABCD
    near = np.asarray([with_bits_flipped(base, [i % 64]) for i in range(300)], dtype=np.uint64)
    exact = np.arange(300, dtype=np.uint64)
    repeat, earlier = near_duplicates(Fingerprints(exact, near), window=8)
    assert len(repeat) == 299 and 0 not in repeat.tolist()
    assert np.all(earlier < repeat)


def test_real_near_duplicate_texts() -> None:
    original = ("Thanks for reaching out about your order. I checked our system and the parcel "
                "left our warehouse on Monday; it should reach you within three working days. "
                "If it has not arrived by Friday, reply to this message and we will send a "
                "replacement at no cost. Is there anything else I can help you with today?")
    edited = original.replace("Monday", "Tuesday")
    others = texts(200, 60, seed=3)
    prints = prints_of([original, *others, edited])
    repeat, earlier = near_duplicates(prints)
    assert repeat.tolist() == [201] and earlier.tolist() == [0]


def test_overlap_between_files() -> None:
    train = texts(100, 30, seed=4)
    punctuated = train[10].replace(" ", ", ", 1) + "."
    validation = [*texts(5, 30, seed=5), train[42].upper(), punctuated]
    train_prints, val_prints = prints_of(train), prints_of(validation)
    found, match = exact_overlap(train_prints.exact, val_prints.exact)
    assert found.tolist() == [5] and match.tolist() == [42]
    found, match = near_overlap(train_prints, val_prints)
    assert found.tolist() == [6] and match.tolist() == [10]


def test_empty_inputs() -> None:
    empty = FingerprintBuilder().finish()
    assert len(empty) == 0
    assert [len(a) for a in exact_duplicates(empty.exact)] == [0, 0]
    assert [len(a) for a in near_duplicates(empty)] == [0, 0]
    assert [len(a) for a in near_overlap(empty, prints_of(["a"]))] == [0, 0]
