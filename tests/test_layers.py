"""Package layering, read from the source: the chat layer (``eagle.chat``, ``eagle.benchmarks``)
sits below data generation, evaluation and the web UI, and only evaluation's commands import
``eagle.evaluation``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import eagle

ROOT = Path(eagle.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return names


def _files(*parts: str) -> list[Path]:
    return sorted(p for part in parts for p in (ROOT / part).glob("**/*.py"))


def _offenders(files: list[Path], banned: tuple[str, ...]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(imported_modules(path))
        if any(name == b or name.startswith(f"{b}.") for b in banned)
    ]


@pytest.mark.parametrize("package", ["ge_data", "application", "model", "train"])
def test_only_evaluation_imports_evaluation(package) -> None:
    assert _offenders(_files(package), ("eagle.evaluation",)) == []


def test_the_chat_layer_imports_none_of_the_packages_above_it() -> None:
    files = [*_files("chat"), ROOT / "benchmarks.py"]
    above = ("eagle.ge_data", "eagle.evaluation", "eagle.application", "eagle.train")
    assert _offenders(files, above) == []
