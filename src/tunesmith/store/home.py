"""Where the registry and its artifacts live: the tunesmith home folder and the database URL."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TUNESMITH_HOME"
DATABASE_ENV = "TUNESMITH_DATABASE_URL"


def tunesmith_home() -> Path:
    """$TUNESMITH_HOME, else ~/.tunesmith; one folder holds the database and the artifacts."""
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".tunesmith").expanduser()


def database_url(home: Path | None = None) -> str:
    """$TUNESMITH_DATABASE_URL (e.g. postgresql+psycopg://...), else SQLite in the home folder."""
    url = os.environ.get(DATABASE_ENV)
    if url:
        return url
    folder = home or tunesmith_home()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'registry.db'}"
