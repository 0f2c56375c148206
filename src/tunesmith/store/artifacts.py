"""Content-addressed artifact storage: a file is kept once, under its SHA-256.

Local folder by default ($TUNESMITH_HOME/artifacts/ab/cdef...); the location string
is what the registry records, so an fsspec URL can replace the folder later without
changing the tables.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from tunesmith.fsutil import atomic_write_bytes, fsync_dir

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = root

    def location(self, sha256: str, suffix: str = "") -> Path:
        """The suffix is kept so a stored dataset is still readable by its file type."""
        return self.root / sha256[:2] / f"{sha256[2:]}{suffix.lower()}"

    def put_bytes(self, data: bytes, suffix: str = "") -> tuple[str, Path]:
        sha = hashlib.sha256(data).hexdigest()
        target = self.location(sha, suffix)
        if not target.exists():
            atomic_write_bytes(target, data)
        return sha, target

    def put_file(self, source: Path) -> tuple[str, Path]:
        """Copy `source` in (atomically: temp name, fsync, rename) unless its content is already kept."""
        sha = sha256_file(source)
        target = self.location(sha, source.suffix)
        if target.exists():
            return sha, target
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".incoming-", delete=False) as tmp:
            with source.open("rb") as handle:
                shutil.copyfileobj(handle, tmp, CHUNK)
            tmp.flush()
            os.fsync(tmp.fileno())
        Path(tmp.name).replace(target)
        fsync_dir(target.parent)
        return sha, target
