"""Heads that ship inside the package, and the tree settings recommended with them.

A shipped head is a normal head folder (``config.json`` + ``model.safetensors``, plus a model
card ``README.md``) under ``eagle/model/heads/``. An optional ``tree.json`` beside it holds the
tree settings (``total_token``, ``depth``, ``top_k``) that were measured best for it on a CPU,
and, when drafts from the context paid in the measurements, a ``lookup`` object with the
``LookupSettings`` fields (``eagle.model.lookup``) that are then on by default.
"""

from __future__ import annotations

import json
from pathlib import Path

from eagle.model.defaults import DEFAULT_TARGET, is_registered

HEADS_DIR = Path(__file__).parent / "heads"
SHIPPED = {DEFAULT_TARGET: "smollm2-135m-instruct-eagle3"}
TREE_FILE = "tree.json"  # a head folder's default tree and drafts from the context


def head_for(base_model_path: str | None) -> Path:
    """The shipped head of a registered target; a clear error for anything else."""
    name = str(base_model_path or DEFAULT_TARGET).lower()
    if not is_registered(name) or name not in SHIPPED:
        raise ValueError(
            f"no head ships for {base_model_path!r}; pass ea_model_path / --ea-model-path "
            f"(shipped heads exist for: {sorted(SHIPPED)})"
        )
    path = HEADS_DIR / SHIPPED[name]
    if not (path / "config.json").exists():
        raise FileNotFoundError(
            f"the shipped head {path} is missing from this installation; reinstall eagle or "
            "pass --ea-model-path"
        )
    return path


def tree_settings(head_path: str | Path) -> dict[str, int]:
    """The recommended tree settings stored with a head (empty when there are none)."""
    settings_file = Path(head_path) / TREE_FILE
    if not settings_file.exists():
        return {}
    raw = json.loads(settings_file.read_text())
    return {k: int(raw[k]) for k in ("total_token", "depth", "top_k") if k in raw}


def head_and_tree(
    base_model_path: str | None, ea_model_path: str | None, **overrides: int | None
) -> tuple[str, dict[str, int]]:
    """The head to load (``ea_model_path``, else the shipped one) and its tree settings: the
    head's ``tree.json`` with the ``total_token``/``depth``/``top_k`` overrides that are set."""
    head = str(ea_model_path or head_for(base_model_path))
    settings = tree_settings(head)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return head, settings


def lookup_settings(head_path: str | Path) -> dict[str, int] | None:
    """The context-lookup settings stored with a head (None: lookup is off by default)."""
    settings_file = Path(head_path) / TREE_FILE
    if not settings_file.exists():
        return None
    raw = json.loads(settings_file.read_text()).get("lookup")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(f"{settings_file}: 'lookup' must be an object of LookupSettings fields")
    return {str(k): int(v) for k, v in raw.items()}
