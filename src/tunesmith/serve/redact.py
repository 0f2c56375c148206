"""No absolute server path in any response: job errors, events, the dashboard's job detail.

A server path tells a caller how the machine is laid out (user names, install folders, the
tunesmith home) and is no use to them: the file ids they uploaded name their data. Known
locations become the caller's own names first (a stored upload becomes its file id, the
job's run folder becomes `runs/<job id>`), then any other absolute path under one of the
machine's top-level folders is cut to its last part.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

HIDDEN = "<server>"


@functools.lru_cache(maxsize=1)
def _absolute() -> re.Pattern[str]:
    try:
        names = (name for name in os.listdir("/") if re.fullmatch(r"[\w.-]+", name))
        tops = sorted(names, key=len, reverse=True)
    except OSError:
        tops = []
    tops = tops or ["home", "root", "tmp", "usr", "var", "opt", "etc", "srv", "mnt", "work"]
    alternatives = "|".join(re.escape(t) for t in tops)
    # A path starts at a top-level folder and is not part of a URL or a longer word.
    return re.compile(rf"(?<![\w:/.~-])/(?:{alternatives})(?:/[^\s'\"(),;:<>\[\]{{}}]*)*")


def public_text(text: str, names: dict[str, str] | None = None) -> str:
    """`text` with server paths replaced: `names` maps known paths to what the caller calls them."""
    for path, name in sorted((names or {}).items(), key=lambda item: len(item[0]), reverse=True):
        if path:
            text = re.sub(re.escape(path) + r":(\d+)", rf"{name} line \1", text)
            text = text.replace(path, name)

    def cut(match: re.Match[str]) -> str:
        last = match.group(0).rstrip("/").rsplit("/", 1)[-1]
        return f"{HIDDEN}/{last}" if last else HIDDEN
    return _absolute().sub(cut, text)


def public_value(value: Any, names: dict[str, str] | None = None) -> Any:
    """The same for every string inside a JSON-like value."""
    if isinstance(value, str):
        return public_text(value, names)
    if isinstance(value, dict):
        return {key: public_value(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [public_value(item, names) for item in value]
    return value


def job_names(job: Any) -> dict[str, str]:
    """A job's own server paths and the names the caller knows them by."""
    data = (job.recipe or {}).get("data") or {}
    names = {data.get("train") or "": job.training_file or "training_file",
             data.get("validation") or "": job.validation_file or "validation_file"}
    if job.run_dir:
        names[str(job.run_dir)] = f"runs/{job.id}"
    output = (job.recipe or {}).get("output") or {}
    if output.get("dir"):
        names[str(output["dir"])] = "runs"
    names.pop("", None)
    return names
