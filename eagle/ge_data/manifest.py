"""The ``eagle-features/1`` manifest: what a data folder holds and what made it.

Owns ``DATA/manifest.json`` (and, for multi-process runs, one ``manifest-partK.json`` per
worker), the target fingerprint, the settings check that makes resuming safe, and the merge of
worker manifests.

Layout of a manifest::

    {"format": "eagle-features/1",
     "target": {"name_or_path", "fingerprint", "num_layers", "hidden_size", "vocab_size"},
     "template", "max_len", "dtype", "feature_layers": {"hidden": [-1], "aux": [i, j, k]},
     "regenerated": {...} | null, "source": {...}, "num_samples", "num_tokens",
     "num_loss_tokens", "shards": [{"file", "samples", "tokens", "loss_tokens"}],
     "complete", "created", "updated", "eagle_version"}

Design choices:
- The fingerprint is a sha256 over the target's config (as JSON, sorted keys, without the keys
  that change with how the model was loaded: dtype, transformers version) and the first rows of
  its input embedding rounded to bf16, so the same model loaded in fp32 or bf16 matches and
  another model with the same shapes does not.
- A manifest is rewritten atomically (temporary file, then rename) after every shard, so it only
  ever lists shards that are completely on disk.
- Resuming compares the recorded settings with the new run's; any difference is an error that
  names the flag, because mixing settings in one folder would silently corrupt the data.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from eagle import __version__

FORMAT = "eagle-features/1"
MANIFEST_FILE = "manifest.json"
FINGERPRINT_ROWS = 16
_LOAD_DEPENDENT_KEYS = ("dtype", "torch_dtype", "transformers_version", "_name_or_path")
# manifest key -> the flags that set it (for error messages)
SETTING_FLAGS = {
    "target": "--base-model-path",
    "template": "--template",
    "max_len": "--max-len",
    "dtype": "--feature-dtype",
    "feature_layers": "--variants / --aux-layers / --target-topk",
    "target_topk": "--target-topk",
    "regenerated": "--regenerate / --regen-*",
    "source": "--data / --offset / --seed / --length-policy / --exclude-*",
}


class ManifestMismatchError(ValueError):
    """A data folder already holds features made with other settings."""


def part_manifest_name(part: int | None) -> str:
    """``manifest.json`` for a single run, ``manifest-partK.json`` for worker K."""
    return MANIFEST_FILE if part is None else f"manifest-part{part}.json"


def target_fingerprint(config_json: str, embedding: torch.Tensor) -> str:
    """sha256 hex of the config JSON (load-dependent keys removed) and the first embedding rows.

    config_json: ``config.to_json_string()``; embedding: the input embedding weight [V, H].
    """
    config = json.loads(config_json)
    for key in _LOAD_DEPENDENT_KEYS:
        config.pop(key, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    rows = embedding[:FINGERPRINT_ROWS].detach().to("cpu", torch.bfloat16).contiguous()
    digest.update(rows.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


def target_info(target: Any, name_or_path: str) -> dict[str, Any]:
    """The manifest's ``target`` entry for a ``TargetModel``."""
    return {
        "name_or_path": name_or_path,
        "fingerprint": target_fingerprint(
            target.config.to_json_string(), target.embed_tokens.weight
        ),
        "num_layers": target.num_layers,
        "hidden_size": target.hidden_size,
        "vocab_size": target.vocab_size,
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_manifest(settings: dict[str, Any]) -> dict[str, Any]:
    """An empty manifest for the given settings (the keys of ``SETTING_FLAGS``)."""
    stamp = now()
    return {
        "format": FORMAT,
        **settings,
        "num_samples": 0,
        "num_tokens": 0,
        "num_loss_tokens": 0,
        "shards": [],
        "complete": False,
        "created": stamp,
        "updated": stamp,
        "eagle_version": __version__,
    }


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The manifest at ``path``, or None when there is none; raises on another format."""
    path = Path(path)
    if not path.exists():
        return None
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ManifestMismatchError(
            f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}; "
            "use another --outdir"
        )
    return manifest


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically, stamping ``updated``."""
    manifest["updated"] = now()
    write_atomically(Path(path), json.dumps(manifest, indent=1).encode())


def write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _comparable(key: str, value: Any) -> Any:
    if key == "target" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "name_or_path"}  # path may be spelt apart
    if key == "regenerated" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "file"}  # one file per worker
    return value


def check_settings(manifest: dict[str, Any], settings: dict[str, Any], where: Path) -> None:
    """Raise ``ManifestMismatchError`` naming the flag of the first setting that differs."""
    for key, flags in SETTING_FLAGS.items():
        old, new = _comparable(key, manifest.get(key)), _comparable(key, settings.get(key))
        if old != new:
            raise ManifestMismatchError(
                f"{where} already holds data made with other {flags} settings "
                f"({key}: stored {json.dumps(old)}, this run {json.dumps(new)}); resume with "
                "the same settings, or write to another --outdir"
            )


def open_manifest(directory: Path, name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The existing manifest ``directory/name`` checked against ``settings``, or a new one."""
    existing = read_manifest(directory / name)
    if existing is None:
        return new_manifest(settings)
    check_settings(existing, settings, directory / name)
    return existing


def merge_manifests(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One manifest for the union of worker manifests (same settings, disjoint shards)."""
    if not parts:
        raise ValueError("no worker manifests to merge")
    first = parts[0]
    for part in parts[1:]:
        check_settings(part, {**first, "source": part["source"]}, Path("worker manifest"))
    merged = {key: value for key, value in first.items() if key != "shards"}
    merged["source"] = {**first["source"], "part": None}
    if first.get("regenerated"):
        files = [p["regenerated"].get("file") for p in parts]
        merged["regenerated"] = {**first["regenerated"], "file": files}
    merged["shards"] = [shard for part in parts for shard in part["shards"]]
    for key in ("num_samples", "num_tokens", "num_loss_tokens"):
        merged[key] = sum(part[key] for part in parts)
    merged["complete"] = all(part.get("complete") for part in parts)
    merged["created"] = min(part["created"] for part in parts)
    return merged
