"""How this process's memory allocator serves large tensors on a CPU: fewer page faults per step.

A training step allocates and frees about a gigabyte of short-lived tensors (autocast's bf16
copy of every weight, every weight's gradient, the head's logits). glibc maps each large block
fresh from the kernel and unmaps it when freed, so every step touches all those pages anew: on
SmolLM2-135M full fine-tuning that was 0.7-1.25 s of system time in a 1.7-2.4 s step
(bench/README.md, "The allocator"). Two settings, both applied before the first large tensor:

- PyTorch's `THP_MEM_ALLOC_ENABLE`: blocks of 2 MiB and more are aligned to and advised as
  transparent huge pages, one fault per 2 MiB instead of 512 (where the kernel allows
  `madvise` huge pages). PyTorch reads it once, at the process's first such block.
- glibc's `mallopt`: blocks under MMAP_THRESHOLD come from the heap and are reused instead of
  being mapped and unmapped each time, and up to TRIM_THRESHOLD of free heap is kept. Larger
  blocks are still mapped, so their memory goes back to the system when freed: the peak
  stays within a few percent of the default's.

Nothing is changed where the operator set either by its own environment variable, or set
TUNESMITH_ALLOCATOR=default, or where the C library is not glibc. A leaf module: no torch import,
so it can run before torch allocates anything.
"""

from __future__ import annotations

import ctypes
import os
import platform

from tunesmith.errors import TunesmithError

ALLOCATOR_ENV = "TUNESMITH_ALLOCATOR"
"""`default` leaves the allocator as the process found it; unset or empty applies the settings."""
MMAP_THRESHOLD = 16 << 20
"""Bytes: each weight-sized block of a small model (a 1536 x 576 fp32 gradient is 3.5 MiB) is
reused from the heap; vocabulary-sized ones (49152 x 576 fp32, 113 MiB) are still mapped."""
TRIM_THRESHOLD = 256 << 20
"""Bytes of free heap kept rather than returned to the system."""
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
THP_ENV = "THP_MEM_ALLOC_ENABLE"
_GLIBC_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def as_environment() -> dict[str, str]:
    """The same settings as environment variables, for a process started from outside that does
    not call `tune` (the benchmarks' peer): glibc reads its two at start-up."""
    return {THP_ENV: "1", _GLIBC_ENV[0]: str(MMAP_THRESHOLD), _GLIBC_ENV[1]: str(TRIM_THRESHOLD)}

_applied: list[str] | None = None


def tune() -> list[str]:
    """Apply both settings once per process; returns what was set (empty if nothing)."""
    global _applied
    if _applied is None:
        choice = os.environ.get(ALLOCATOR_ENV, "")
        if choice not in ("", "default"):
            raise TunesmithError(f"unknown value {choice!r}", where=ALLOCATOR_ENV,
                                 fix="unset it to apply tunesmith's settings, or set it to default")
        _applied = [] if choice == "default" else _apply()
    return list(_applied)


def _apply() -> list[str]:
    done = []
    if THP_ENV not in os.environ:
        os.environ[THP_ENV] = "1"
        done.append(f"{THP_ENV}=1")
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc" \
            and not any(name in os.environ for name in _GLIBC_ENV):
        libc = ctypes.CDLL(None)  # the process's own C library
        if libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
            done.append(f"mallopt mmap_threshold={MMAP_THRESHOLD} trim_threshold={TRIM_THRESHOLD}")
    return done
