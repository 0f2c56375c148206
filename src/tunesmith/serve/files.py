"""/v1/files: fine-tuning data, uploaded as JSONL, streamed to disk under a size cap and
stored under a server-made id (the content hash decides the location, never the client's name)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Query, UploadFile
from fastapi.responses import FileResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.fsutil import fsync_dir
from tunesmith.serve.errors import APIError, not_found
from tunesmith.serve.objects import file_object, page
from tunesmith.serve.pagination import after_condition
from tunesmith.serve.state import ServerState, server
from tunesmith.store.schema import File, new_id, now

router = APIRouter()
PURPOSES = ("fine-tune",)
CHUNK = 1 << 20


@router.post("/v1/files")
def upload(file: UploadFile, purpose: Annotated[str, Form()],
           state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    if purpose not in PURPOSES:
        raise APIError(400, f"purpose {purpose!r} is not supported; use 'fine-tune'", param="purpose")
    name = Path(file.filename or "").name
    if not name.lower().endswith(".jsonl"):
        raise APIError(400, f"file {name!r} is not a .jsonl file: fine-tuning data is JSON Lines",
                       param="file", code="invalid_file_format")
    sha, location, size = _store(file, state)
    row = _record(state, sha, name, location, size, purpose)
    return file_object(row)


def _store(upload: UploadFile, state: ServerState) -> tuple[str, Path, int]:
    """Copy the upload into the artifact folder while hashing and checking each line."""
    root = state.registry.artifacts.root
    root.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    checker = _LineChecker()
    with tempfile.NamedTemporaryFile(dir=root, prefix=".upload-", delete=False) as tmp:
        try:
            while chunk := upload.file.read(CHUNK):
                size += len(chunk)
                if size > state.limits.max_upload_bytes:
                    raise APIError(413, f"file is larger than the {state.limits.max_upload_bytes} byte limit",
                                   param="file", code="file_too_large")
                digest.update(chunk)
                checker.feed(chunk)
                tmp.write(chunk)
            checker.finish()
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            Path(tmp.name).unlink(missing_ok=True)
            raise
    sha = digest.hexdigest()
    target = state.registry.artifacts.location(sha, ".jsonl")
    target.parent.mkdir(parents=True, exist_ok=True)
    Path(tmp.name).replace(target)
    fsync_dir(target.parent)
    return sha, target, size


class _LineChecker:
    """Every non-blank line must be a JSON object; the first bad one is refused with its number.
    The full data check (formats, roles, tokens) runs when a job validates its files."""

    def __init__(self) -> None:
        self.pending = b""
        self.line = 0
        self.rows = 0

    def feed(self, chunk: bytes) -> None:
        lines = (self.pending + chunk).split(b"\n")
        self.pending = lines.pop()
        for raw in lines:
            self._check(raw)

    def finish(self) -> None:
        if self.pending:
            self._check(self.pending)
        if self.rows == 0:
            raise APIError(400, "the file holds no examples", param="file", code="invalid_file_format")

    def _check(self, raw: bytes) -> None:
        self.line += 1
        try:
            text = raw.decode("utf-8-sig" if self.line == 1 else "utf-8").strip()
        except UnicodeDecodeError:
            raise APIError(400, f"line {self.line}: not UTF-8 text", param="file",
                           code="invalid_file_format") from None
        if not text:
            return
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise APIError(400, f"line {self.line}: not valid JSON ({exc.msg} at column {exc.colno})",
                           param="file", code="invalid_file_format") from None
        except RecursionError:
            raise APIError(400, f"line {self.line}: the JSON is nested too deeply to read", param="file",
                           code="invalid_file_format") from None
        except ValueError as exc:  # an integer of more digits than Python converts (4,300)
            raise APIError(400, f"line {self.line}: not valid JSON ({exc})", param="file",
                           code="invalid_file_format") from None
        if not isinstance(value, dict):
            raise APIError(400, f"line {self.line}: each line must be a JSON object", param="file",
                           code="invalid_file_format")
        self.rows += 1


def _record(state: ServerState, sha: str, name: str, location: Path, size: int, purpose: str) -> File:
    def work(session: Session) -> File:
        row = session.scalar(select(File).where(File.sha256 == sha))
        if row is None:
            row = File(id=new_id("file-"), sha256=sha, filename=name, bytes=size, purpose=purpose,
                       location=str(location))
            session.add(row)
        else:  # the same content uploaded again: one stored copy, visible again if it was deleted
            row.deleted_at, row.filename, row.purpose = None, name, purpose
            row.created_at = now()
        session.flush()
        return row
    return state.registry.write(work)


def live_file(state: ServerState, file_id: str, param: str = "file_id") -> File:
    row = state.registry.read(lambda s: s.get(File, file_id))
    if row is None or row.deleted_at is not None or row.purpose not in PURPOSES:
        raise not_found("file", file_id, param)
    return row


@router.get("/v1/files")
def list_files(state: Annotated[ServerState, Depends(server)], purpose: str | None = None,
               limit: Annotated[int, Query(ge=1)] = 100, after: str | None = None,
               order: Literal["asc", "desc"] = "desc") -> dict[str, Any]:
    limit = min(limit, state.limits.max_list_limit)
    query = select(File).where(File.deleted_at.is_(None), File.purpose.in_(PURPOSES))
    if purpose:
        query = query.where(File.purpose == purpose)
    descending = order == "desc"
    if after:
        anchor = live_file(state, after, "after")
        query = query.where(after_condition(File.created_at, File.id, anchor.created_at, anchor.id,
                                            descending))
    keys = (File.created_at, File.id)
    query = query.order_by(*(k.desc() if descending else k for k in keys)).limit(limit + 1)
    rows = state.registry.read(lambda s: list(s.scalars(query)))
    return page([file_object(r) for r in rows[:limit]], len(rows) > limit)


@router.get("/v1/files/{file_id}")
def retrieve_file(file_id: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    return file_object(live_file(state, file_id))


@router.get("/v1/files/{file_id}/content")
def file_content(file_id: str, state: Annotated[ServerState, Depends(server)]) -> FileResponse:
    row = live_file(state, file_id)
    return FileResponse(row.location, media_type="application/jsonl", filename=f"{row.id}.jsonl")


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    """Hidden from the API; the stored content stays while jobs and dataset versions refer to it."""
    row = live_file(state, file_id)

    def work(session: Session) -> None:
        found = session.get(File, row.id)
        assert found is not None
        found.deleted_at = now()
    state.registry.write(work)
    return {"id": row.id, "object": "file", "deleted": True}
