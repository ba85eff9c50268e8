"""The campaign's prompt pools: which ShareGPT prompts each chunk of ``eagle.train.recipe`` answers.

Four training pools, used in this order in slices of ``CHUNK_CONVERSATIONS`` (``POOLS``), and
a validation pool that never changes (stage 0 of the recipe's docstring tells how they are
drawn): the first turns of chats no head was trained on, the first turns of v1's own selection,
second questions after the target's committed first answers, and third questions after its
committed first and second answers. The pools are files in the recipe's work folder, written
once; ``check_pools`` refuses files whose sizes would move every later chunk's slice.
"""

from __future__ import annotations

import json
from pathlib import Path

CHUNK_CONVERSATIONS = 1000
# the training pools in campaign order, with the chunks each one makes (its prompts in slices of
# CHUNK_CONVERSATIONS; the last slice may be shorter): 4,662 prompts, then v1's 4,000, then
# 4,321 second questions (TURN2_POOL), then 3,243 third questions (TURN3_POOL)
TURN2_POOL = "pool-turn2.jsonl"
TURN3_POOL = "pool-turn3.jsonl"
POOLS = (("pool-train.jsonl", 5), ("pool-v1.jsonl", 4), (TURN2_POOL, 5), (TURN3_POOL, 4))
VAL_POOL = "pool-val.jsonl"
V1_SELECTION = 4000  # v1 trained on this many first conversations of the seed-0 selection
# chunks that train once more on the data of the earlier chunks listed, captured again from
# their committed answers, shuffled together with their own new data (if any: REPLAY_ONLY).
# Follow-up chunks come mixed with first turns (on follow-ups alone chunk 9 lowered first-turn
# acceptance): about half of each mix up to chunk 15, about three quarters of the answer tokens
# from chunk 16 on (with the same 60-step anneal, chunk 15's half did not move step-0 top-1,
# chunk 16's three quarters added 0.009); the model card's chunk sections give each choice and
# what it measured. A capture runs at about 600 tokens/s on a 2-core AMD CPU.
REPLAYS: dict[int, tuple[int, ...]] = {
    10: (5, 6, 7, 8, 9),
    11: (2, 3, 4),
    12: (5, 6, 7),
    13: (2, 3, 8, 11),
    14: (4, 5, 6, 12),
    15: (7, 8),
    16: (2, 3, 4),
    17: (5, 6, 7),
}
# replay chunks that answer no new prompt (the chunks after one take the slice it would have)
REPLAY_ONLY = frozenset({10})
# the follow-up pools: the user turn whose question the target answers, and the chunks whose
# committed answers (one turn fewer) open its conversations (chunks 0 and 1 kept no answer file)
FOLLOW_UPS: dict[str, tuple[int, tuple[int, ...]]] = {
    TURN2_POOL: (2, (2, 3, 4, 5, 6, 7, 8)),
    TURN3_POOL: (3, (9, 11, 12, 13, 14)),
}


def answered_turn(pool: str) -> int:
    """The user turn whose question the target answers in the prompts of ``pool``."""
    return FOLLOW_UPS[pool][0] if pool in FOLLOW_UPS else 1


def benchmark_prompts() -> list[str]:
    """Every MT-bench and HumanEval user turn: no pool asks them."""
    from eagle.benchmarks import load_questions

    return [t for n in ("mt_bench", "humaneval") for q in load_questions(n) for t in q.turns]


def _write_atomically(path: Path, lines: list[str]) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text("".join(lines), encoding="utf-8")
    partial.replace(path)


def write_pools(workdir: Path) -> tuple[Path, Path]:
    """Write the training and validation pools and v1's pool (ShareGPT JSON lines, first turns,
    selection order) unless they exist; see stage 0 in ``eagle.train.recipe``. Returns the
    training and validation pools."""
    from eagle.ge_data.regenerate import to_record
    from eagle.ge_data.sharegpt import bundled_sharegpt_path, load_sharegpt

    paths = workdir / POOLS[0][0], workdir / VAL_POOL
    v1_path = workdir / POOLS[1][0]
    if all(p.exists() for p in (*paths, v1_path)):
        return paths
    source = bundled_sharegpt_path()
    common = {"seed": 0, "exclude_prompts": benchmark_prompts(), "openings_only": True}
    v1, _ = load_sharegpt(source, limit=V1_SELECTION, **common)  # type: ignore[arg-type]
    seen = {c.id for c in v1}
    workdir.mkdir(parents=True, exist_ok=True)
    pools = {v1_path: v1}
    for path, split in zip(paths, ("train", "val"), strict=True):
        chats, _ = load_sharegpt(source, split=split, **common)  # type: ignore[arg-type]
        pools[path] = [c for c in chats if c.id not in seen]
    for path, chats in pools.items():
        if path.exists():
            continue
        lines = [json.dumps(to_record(c.first_turns(1)), ensure_ascii=False) + "\n" for c in chats]
        _write_atomically(path, lines)
    return paths


def write_follow_up_pool(workdir: Path, campaign: Path, pool: str) -> Path:
    """The follow-up pool ``WORKDIR/pool`` (a key of ``FOLLOW_UPS``) unless it exists, and its path.

    For the pool's turn ``t`` and every conversation of its chunks (in chunk order, each in the
    order of its committed answers file ``campaign/answers-cK.jsonl``, which holds ``t - 1``
    questions and the target's own answers to them) whose ShareGPT source asks a ``t``-th
    question: the committed conversation and ShareGPT's ``t``-th question (its ShareGPT answer
    is a placeholder the data stage replaces with the target's). Chats that ask an MT-bench or
    HumanEval prompt in any turn are left out (``benchmark_prompts``). No conversation of it is
    in the validation pool: they all come from the training pools.
    """
    from dataclasses import replace

    from eagle.ge_data.regenerate import read_regenerated, to_record
    from eagle.ge_data.sharegpt import bundled_sharegpt_path, load_sharegpt

    if pool not in FOLLOW_UPS:
        raise ValueError(f"pool must be one of {sorted(FOLLOW_UPS)}; got {pool!r}")
    path = workdir / pool
    if path.exists():
        return path
    turn, chunks = FOLLOW_UPS[pool]
    files = [campaign / f"answers-c{k}.jsonl" for k in chunks]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise SystemExit(f"{pool} is made from {campaign}/answers-cK.jsonl: missing {missing}")
    sources, _ = load_sharegpt(
        bundled_sharegpt_path(), exclude_prompts=benchmark_prompts(), openings_only=True
    )
    by_id = {c.id: c for c in sources}
    asked = 2 * (turn - 1)  # messages before the new question
    lines = []
    for answers in files:
        for chat_id, answered in read_regenerated(answers)[1].items():
            source = by_id.get(chat_id)
            if source is None or len(source.turns) < asked + 2 or len(answered.turns) != asked:
                continue  # no next question, a benchmark prompt in the chat, or no answer
            chat = replace(answered, turns=(*answered.turns, *source.turns[asked : asked + 2]))
            lines.append(json.dumps(to_record(chat), ensure_ascii=False) + "\n")
    _write_atomically(path, lines)
    return path


def data_chunks(chunk: int) -> tuple[int, ...]:
    """The chunks whose data chunk ``chunk`` trains on: those it replays, then its own."""
    return (*REPLAYS.get(chunk, ()), *(() if chunk in REPLAY_ONLY else (chunk,)))


def chunk_slice(chunk: int) -> tuple[str, int]:
    """The pool file and the offset in it of chunk ``chunk``'s prompts (``POOLS``; the chunks
    ``REPLAY_ONLY`` take none, so the chunks after one take the slice it would have)."""
    if chunk in REPLAY_ONLY:
        raise ValueError(f"chunk {chunk} answers no prompt: it replays chunks {REPLAYS[chunk]}")
    index = chunk - sum(1 for replay in REPLAY_ONLY if replay < chunk)
    first = 0
    for name, chunks in POOLS:
        if index < first + chunks:
            return name, (index - first) * CHUNK_CONVERSATIONS
        first += chunks
    raise ValueError(
        f"chunk {chunk} is past the training pools ({first} chunks of prompts and "
        f"{len(REPLAY_ONLY)} replays): extend POOLS first"
    )


def check_pools(workdir: Path) -> None:
    """Refuse pools whose sizes do not make the chunks ``POOLS`` counts on (a changed ShareGPT
    file or selection would silently move every chunk's slice)."""
    for name, chunks in POOLS:
        if name in FOLLOW_UPS and not (workdir / name).exists():
            continue  # written when its first chunk runs
        lines = (workdir / name).read_text(encoding="utf-8").count("\n")
        made = -(-lines // CHUNK_CONVERSATIONS)
        if made != chunks:
            raise SystemExit(
                f"{workdir / name} holds {lines} prompts, {made} chunks of "
                f"{CHUNK_CONVERSATIONS}; the campaign counts on {chunks} (pools.POOLS)"
            )
