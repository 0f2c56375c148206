"""Find and load a base model and its tokenizer. The one answer to "what does this
base-model name mean", in this order: a bundled model (tunesmith/tiny-chat), a name
registered with `tunesmith models pull` / `models add-base`, a local folder (Hugging Face
layout or a single GGUF file) or .gguf file, and a hub id (org/name) for users with a network.

Errors are raised before any compute is spent and say what to do; a hub id on a machine
that cannot reach the hub fails in seconds rather than after a minute of retries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.errors import ModelError
from tunesmith.recipe import BUNDLED_MODEL

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ASSETS = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = {BUNDLED_MODEL: ASSETS / "models" / "tiny-chat"}


@dataclass(frozen=True, slots=True)
class ModelRef:
    """Where to load a model from: a folder or hub id, plus the GGUF file name if any."""

    name: str
    location: str
    gguf_file: str | None = None
    revision: str | None = None
    is_local: bool = True

    def kwargs(self, trust_remote_code: bool) -> dict[str, Any]:
        extra: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if self.gguf_file:
            extra["gguf_file"] = self.gguf_file
        if self.revision and not self.is_local:
            extra["revision"] = self.revision
        return extra


def resolve_model(name: str, revision: str | None = None) -> ModelRef:
    """Turn a recipe's base_model into a loadable reference, or explain why it cannot be."""
    if name in BUNDLED:
        return ModelRef(name, str(BUNDLED[name]))
    registered = _registered(name)
    if registered is not None:
        return registered
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return ModelRef(name, str(path.parent), path.name)
        if not path.is_dir():
            raise ModelError(f"base model path is not a folder: {path}")
        if (path / "config.json").exists():
            _check_causal_lm(path)
            return ModelRef(name, str(path))
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelRef(name, str(path), ggufs[0].name)
        raise ModelError(
            f"folder {path} holds no config.json (and not exactly one .gguf file)",
            fix="point base_model at a Hugging Face model folder or a .gguf file")
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelError(
            f"base model path does not exist: {name}",
            fix=f"use an existing folder or .gguf file, a name from `tunesmith models bases` (e.g. "
                f"`tunesmith models pull smollm2-135m-instruct`), a hub id like 'org/model', or "
                f"'{BUNDLED_MODEL}'")
    return ModelRef(name, name, revision=revision, is_local=False)


def _registered(name: str) -> ModelRef | None:
    """A name registered in the tunesmith home, or None (names with a '/' never are)."""
    from tunesmith.store.base_models import registered_base

    row = registered_base(name)
    if row is None:
        return None
    location = Path(row.location)
    if not (location / (row.gguf_file or "")).exists():
        raise ModelError(f"base model '{name}' is registered at {location / (row.gguf_file or '')}, "
                         "which no longer exists",
                         fix=f"pull it again (`tunesmith models pull {name}`) or register its new place "
                             f"with `tunesmith models add-base {name} PATH`")
    return ModelRef(name, str(location), row.gguf_file)


_HUB_REACHABLE: dict[str, bool] = {}


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One short TCP probe of the hub endpoint per process, in a thread so a hung DNS
    lookup cannot hold it past the timeout."""
    import socket
    import threading
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if host not in _HUB_REACHABLE:
        result: list[bool] = []

        def probe() -> None:
            try:
                socket.create_connection((host, 443), timeout=timeout).close()
                result.append(True)
            except OSError:
                result.append(False)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout)
        _HUB_REACHABLE[host] = bool(result and result[0])
    return _HUB_REACHABLE[host]


def _hub_kwargs(ref: ModelRef) -> dict[str, Any]:
    """For a hub id: use the local cache when the hub is off or unreachable, or say quickly
    that the model cannot be had."""
    import os

    if ref.is_local:
        return {}
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    if not offline and _hub_reachable():
        return {}
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(ref.location, "config.json", revision=ref.revision)
    if isinstance(cached, str):
        return {"local_files_only": True}
    why = "HF_HUB_OFFLINE is set" if offline else "the model hub cannot be reached from this machine"
    raise ModelError(
        f"cannot load '{ref.name}': {why} and it is not in the local Hugging Face cache",
        fix="pull a named base model (`tunesmith models pull smollm2-135m-instruct`), register a local "
            "copy (`tunesmith models add-base NAME PATH`), or point base_model at a local folder")


def _check_causal_lm(folder: Path) -> None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {folder / 'config.json'}: {exc}") from None
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        raise ModelError(
            f"{folder} is a {', '.join(architectures)}, not a causal language model",
            fix="tunesmith fine-tunes decoder-only causal LMs (…ForCausalLM)")


def check_remote_code(ref: ModelRef, trust_remote_code: bool) -> None:
    """Refuse, before loading anything, a local model that needs its own Python code."""
    config = Path(ref.location) / "config.json"
    if trust_remote_code or not ref.is_local or not config.exists():
        return
    try:
        auto_map = json.loads(config.read_text()).get("auto_map")
    except (OSError, json.JSONDecodeError):
        return
    if auto_map:
        raise ModelError(
            f"{ref.name} needs its own Python code to load (trust_remote_code)",
            where=str(config),
            fix="review the model's code, then set trust_remote_code: true in the recipe")


def load_tokenizer(ref: ModelRef, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.location, **ref.kwargs(trust_remote_code),
                                                  **_hub_kwargs(ref))
    except ModelError:
        raise
    except Exception as exc:  # transformers raises many types; the user needs one message
        raise _load_error(ref, "tokenizer", exc) from exc
    if not tokenizer.is_fast:
        raise ModelError(
            f"the tokenizer of {ref.name} is not a fast tokenizer",
            fix="tunesmith needs a fast (Rust) tokenizer to map loss masks to characters")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_config(ref: ModelRef, trust_remote_code: bool = False) -> Any:
    """The model's config alone (what a server needs to measure prompts without the weights)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(ref.location, **ref.kwargs(trust_remote_code), **_hub_kwargs(ref))
    except ModelError:
        raise
    except Exception as exc:
        raise _load_error(ref, "config", exc) from exc


def load_model(ref: ModelRef, trust_remote_code: bool = False, dtype: Any = None,
               head: str = "causal_lm") -> PreTrainedModel:
    """The base model; head="score" loads it with a fresh one-output scalar head (reward models)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    hub = _hub_kwargs(ref)
    try:
        if head == "score":
            return AutoModelForSequenceClassification.from_pretrained(
                ref.location, dtype=dtype, num_labels=1, **ref.kwargs(trust_remote_code), **hub)
        return AutoModelForCausalLM.from_pretrained(
            ref.location, dtype=dtype, **ref.kwargs(trust_remote_code), **hub)
    except Exception as exc:
        raise _load_error(ref, "model", exc) from exc


def _load_error(ref: ModelRef, what: str, exc: Exception) -> ModelError:
    text = str(exc)
    if "trust_remote_code" in text:
        return ModelError(
            f"{ref.name} needs its own Python code to load (trust_remote_code)",
            fix="review the model's code, then set trust_remote_code: true in the recipe")
    if not ref.is_local:
        return ModelError(
            f"cannot load {what} '{ref.name}' from the hub: {text.splitlines()[0] if text else exc!r}",
            fix="check the id and your network, or point base_model at a local folder")
    return ModelError(f"cannot load {what} from {ref.location}: {text.splitlines()[0] if text else exc!r}")
