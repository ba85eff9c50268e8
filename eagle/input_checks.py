"""Checks of the numbers a user gives: command-line flags and web-form fields.

A ``Bound`` says which values a number may take (an integer, or any finite float; optional
lower and upper limits; extra allowed values such as -1 = measure). ``Bound.check`` returns the
value as ``int`` or ``float`` or raises ``ValueError`` naming the input and its allowed values:
NaN, infinities, ``bool``, ``None`` and strings never pass. ``check_flags`` applies a table of
bounds to parsed flags and exits through ``parser.error`` (status 2), so that every command line
checks its flags before it loads a model. ``check_top_k_fits`` compares the tree branching with
the draft vocabulary a local head folder declares, and ``check_device`` the device with the
machine, also before anything is loaded. ``plain_name`` and ``inside`` keep output paths built
from user-given names (a model id, a benchmark name) inside their folder. ``json_object_line``
reads one line of a JSON-lines file a user gives (questions, answers), errors naming the place.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

SEED_LIMIT = 2**63 - 1  # torch.manual_seed takes at most 2**64 - 1; leave room for seed + i


@dataclass(frozen=True)
class Bound:
    """The values a number may take: ``low`` and ``high`` are inclusive (``low`` is exclusive
    with ``low_open``); ``special`` values are allowed outside the range."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    low_open: bool = False
    special: tuple[int, ...] = ()

    def limits(self) -> str:
        """The allowed values as a range, e.g. ``-1 or >= 1`` or ``in [0, 1]``."""
        return self._specials() + self._range()

    def describe(self) -> str:
        """The allowed values with their kind, e.g. ``-1 or an integer >= 1``."""
        kind = "an integer" if self.integer else "a finite number"
        return self._specials() + f"{kind} {self._range()}".rstrip()

    def _specials(self) -> str:
        return "".join(f"{v} or " for v in self.special)

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            return f"in {left}{_shown(self.low)}, {_shown(self.high)}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_shown(self.low)}"
        return "" if self.high is None else f"<= {_shown(self.high)}"

    def check(self, name: str, value: object) -> int | float:
        """``value`` as a number when it is allowed; else ValueError naming ``name``: a value
        of the wrong kind (NaN, a string, ...) is told the whole description, a number out of
        range only the range."""
        number = _as_number(value, self.integer)
        if number is None:
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")
        if number not in self.special and not self._inside(number):
            raise ValueError(f"{name} must be {self.limits()}, got {value!r}")
        return number

    def _inside(self, number: int | float) -> bool:
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            return False
        return self.high is None or number <= self.high


POSITIVE_INT = Bound(1, integer=True)
NON_NEGATIVE_INT = Bound(0, integer=True)
NON_NEGATIVE = Bound(0.0)  # e.g. a temperature: any finite float >= 0
PROBABILITY = Bound(0.0, 1.0)
SEED = Bound(0, SEED_LIMIT, integer=True)
TREE_FLAGS: Mapping[str, Bound] = {
    "--total-token": Bound(1, integer=True, special=(-1,)),  # -1: measure on this device
    "--depth": POSITIVE_INT,
    "--top-k": POSITIVE_INT,
}


def check_values(args: argparse.Namespace, bounds: Mapping[str, Bound]) -> None:
    """Raise ValueError naming the first flag outside its bound.

    Keys are flags (``--top-p``), read from ``args.top_p``; flags left at None are not checked.
    """
    for flag, bound in bounds.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            bound.check(flag, value)


def check_flags(
    parser: argparse.ArgumentParser, args: argparse.Namespace, bounds: Mapping[str, Bound]
) -> None:
    """``check_values``, exiting through ``parser.error`` (status 2) instead of raising."""
    try:
        check_values(args, bounds)
    except ValueError as error:
        parser.error(str(error))


def plain_name(flag: str, value: str) -> str:
    """``value`` when it can be a file name inside a folder (no separator, not ``.``/``..``);
    else ValueError naming ``flag``, so that a name never leads a path out of its folder."""
    if value in ("", ".", "..") or any(c in value for c in "/\\\0"):
        raise ValueError(
            f"{flag} must be a plain name (no '/', '\\', NUL, not '.' or '..'), got {value!r}"
        )
    return value


def inside(path: Path, folder: Path, flags: str) -> Path:
    """``path`` when it resolves inside ``folder``; else ValueError naming the ``flags`` that
    made it."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ValueError(f"{flags} would put {path} outside {folder}/")
    return path


def head_vocab_size(head: str | Path) -> int | None:
    """The draft vocabulary of a local head folder, from its ``config.json`` (None when the
    folder or the size is not there, e.g. a hub id: the model checks it when loading)."""
    config = Path(head) / "config.json"
    try:
        raw = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict):
        return None
    size = raw.get("draft_vocab_size") or raw.get("vocab_size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def check_top_k_fits(top_k: int | None, head: str | Path | None) -> None:
    """Raise ValueError when ``top_k`` exceeds the draft vocabulary of the local ``head``."""
    if top_k is None or head is None:
        return
    size = head_vocab_size(head)
    if size is not None and top_k > size:
        raise ValueError(
            f"--top-k {top_k} (or the head's tree.json) exceeds the draft vocabulary of "
            f"{Path(head) / 'config.json'} ({size} tokens): use --top-k in 1..{size}"
        )


def check_device(device: str, also: tuple[str, ...] = ()) -> None:
    """Raise ValueError naming --device unless it is cpu, cuda or cuda:N present on this machine
    (or one of ``also``, e.g. "auto")."""
    import torch  # here: importing this module stays light

    if device in also:
        return
    try:
        parsed = torch.device(device)
    except RuntimeError:
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda"):
        allowed = ", ".join(("cpu", "cuda", "cuda:N", *also))
        raise ValueError(f"--device must be one of {allowed}, got {device!r}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if parsed.type == "cuda" and (parsed.index or 0) >= count:
        raise ValueError(f"--device {device}: this machine has {count} CUDA device(s)")


def _as_number(value: object, integer: bool) -> int | float | None:
    """``value`` as an int (``integer``: ints and integral floats) or a finite float; else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if integer:
        return value if isinstance(value, int) else (int(value) if value.is_integer() else None)
    try:
        return float(value)
    except OverflowError:  # an int too large for a float
        return None


def _shown(limit: float) -> str:
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def json_object_line(line: str, where: str, what: str, fix: str = "") -> dict:
    """One JSON object from a line of a user's JSON-lines file; a ``ValueError`` names ``where``
    (file and line) and ``what`` the line should hold (e.g. ``"an answer line"``), and ends
    with ``fix`` (e.g. ``"; delete the broken line"``)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error}){fix}") from error
    except RecursionError as error:
        raise ValueError(f"{where}: JSON nested too deeply{fix}") from error
    if not isinstance(record, dict):
        kind = "null" if record is None else type(record).__name__
        raise ValueError(f"{where}: {what} must be a JSON object, got {kind}{fix}")
    return record
