"""API keys: `tunesmith keys create` shows a key once and stores only its SHA-256.

A plain SHA-256 is enough here (a slow password hash is not needed): keys are 256 random
bits, so there is no dictionary to guess from, and a fast check keeps every request cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunesmith.store.errors import RegistryError
from tunesmith.store.registry import Registry
from tunesmith.store.schema import ApiKey, now

KEY_PREFIX = "tsk-"
CACHE_SECONDS = 1.0
"""Active key hashes are re-read this often: a revoked key stops working within a second."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(registry: Registry, name: str) -> tuple[ApiKey, str]:
    """A new key: the row (hash only) and the key itself, which is never stored."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    row = ApiKey(name=name, sha256=hash_key(secret), prefix=secret[:10])

    def work(session: Session) -> ApiKey:
        session.add(row)
        session.flush()
        return row
    return registry.write(work), secret


def list_keys(registry: Registry) -> list[ApiKey]:
    return registry.read(lambda s: list(s.scalars(select(ApiKey).order_by(ApiKey.created_at))))


def revoke_key(registry: Registry, ref: str) -> ApiKey:
    """Revoke by id, name or the key's shown prefix."""
    def work(session: Session) -> ApiKey:
        rows = [k for k in session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None)))
                if ref in (k.id, k.name, k.prefix)]
        if not rows:
            raise RegistryError(f"no active key matches {ref!r}", fix="see `tunesmith keys list`")
        if len(rows) > 1:
            raise RegistryError(f"{ref!r} matches several keys", fix="give the key's id")
        rows[0].revoked_at = now()
        return rows[0]
    return registry.write(work)


class KeyChecker:
    """Answers "may this request pass?" from a briefly cached set of active key hashes."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self._hashes: frozenset[str] = frozenset()
        self._read_at = -1e9
        self._lock = threading.Lock()

    def active(self) -> frozenset[str]:
        with self._lock:
            if time.monotonic() - self._read_at > CACHE_SECONDS:
                self._hashes = frozenset(self.registry.read(lambda s: list(s.scalars(
                    select(ApiKey.sha256).where(ApiKey.revoked_at.is_(None))))))
                self._read_at = time.monotonic()
            return self._hashes

    def allows(self, authorization: str | None) -> bool:
        return self._matches(self.active(), authorization)

    def allows_cached(self, authorization: str | None) -> bool | None:
        """`allows` from the cache alone, without the database (so the event loop may ask it);
        None when the cached keys are too old to answer."""
        if time.monotonic() - self._read_at > CACHE_SECONDS:
            return None
        return self._matches(self._hashes, authorization)  # set before _read_at: never older

    @staticmethod
    def _matches(hashes: frozenset[str], authorization: str | None) -> bool:
        if not hashes:
            return True  # no keys configured: open (the CLI warns when that is beyond loopback)
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return False
        digest = hash_key(key.strip())
        return any(hmac.compare_digest(digest, h) for h in hashes)
