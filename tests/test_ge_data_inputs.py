"""``python -m eagle.ge_data`` refuses bad input before loading a model, naming the flag or the
file (and line); a run never ends "complete" with no sample; a corrupt shard is named."""

from __future__ import annotations

import io
import json

import pytest
from helpers import make_model, save_chat_target_dir, word_conversations, write_jsonl

from eagle.ge_data import main as ge_main
from eagle.ge_data import vocab
from eagle.ge_data.feature_format import VOCAB_FILE, read_manifest
from eagle.ge_data.sharegpt import ReadStats, iter_raw_records, load_sharegpt

DEEP = "[" * 100_000 + "]" * 100_000  # beyond the JSON decoder's recursion limit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a model is loaded: every error here comes before that."""

    def never(args):
        raise AssertionError("the target was loaded before the input was checked")

    monkeypatch.setattr(ge_main, "load_target", never)


def _run(data, outdir, *flags: str) -> int:
    return ge_main.main(["--data", str(data), "--outdir", str(outdir), "--quiet", *flags])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--regen-temperature", "nan"], "--regen-temperature must be a finite number >= 0"),
        (["--regen-temperature", "-1"], "--regen-temperature must be >= 0, got -1.0"),
        (["--regen-top-p", "0"], "--regen-top-p must be in (0, 1], got 0.0"),
        (["--regen-top-p", "nan"], "--regen-top-p must be a finite number in (0, 1], got nan"),
        (["--regen-top-p", "inf"], "--regen-top-p must be a finite number in (0, 1], got inf"),
        (["--regen-top-p", "1.5"], "--regen-top-p must be in (0, 1], got 1.5"),
        (["--regen-seed", "-1"], "--regen-seed must be in [0, 9223372036854775807], got -1"),
        (["--regen-max-new-tokens", "0"], "--regen-max-new-tokens must be >= 1, got 0"),
        (["--regen-batch-size", "0"], "--regen-batch-size must be >= 1, got 0"),
        (["--limit", "0"], "--limit must be >= 1, got 0"),
        (["--offset", "-1"], "--offset must be >= 0, got -1"),
        (["--max-len", "0"], "--max-len must be >= 1, got 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--batch-tokens", "-8"], "--batch-tokens must be >= 1, got -8"),
        (["--shard-tokens", "0"], "--shard-tokens must be >= 1, got 0"),
        (["--target-topk", "-1"], "--target-topk must be >= 0, got -1"),
        (["--draft-vocab-size", "0"], "--draft-vocab-size must be >= 1, got 0"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--num-parts", "0", "--part", "0"], "--num-parts must be >= 1, got 0"),
        (["--part", "-1", "--num-parts", "2"], "--part must be >= 0, got -1"),
        (["--max-turns", "0"], "--max-turns must be >= 1, got 0"),
        (["--split", "test"], "argument --split: invalid choice"),
        (["--answer-last-turn", "--max-turns", "2"], "--answer-last-turn needs --regenerate"),
        (["--answer-last-turn", "--regenerate"], "needs --regenerate and --max-turns N"),
        (
            ["--answer-last-turn", "--regenerate", "--max-turns", "2", "--regen-temperature", "1"],
            "--answer-last-turn answers greedily in one pass",
        ),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(tmp_path, flags, message, capsys, no_model):
    write_jsonl(tmp_path / "data.jsonl", word_conversations(2))
    with pytest.raises(SystemExit) as exit_info:
        _run(tmp_path / "data.jsonl", tmp_path / "out", *flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_paths_of_the_wrong_kind_are_flag_errors(tmp_path, capsys, no_model):
    write_jsonl(tmp_path / "data.jsonl", word_conversations(2))
    cases = [
        ((tmp_path, tmp_path / "out"), "--data must be a ShareGPT JSON or JSON-lines file"),
        ((tmp_path / "absent.json", tmp_path / "out"), "absent.json is not found"),
        ((tmp_path / "data.jsonl", tmp_path / "data.jsonl"), "--outdir must be a folder"),
    ]
    for (data, outdir), message in cases:
        with pytest.raises(SystemExit) as exit_info:
            _run(data, outdir)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _run(
            tmp_path / "data.jsonl",
            tmp_path / "out",
            "--regenerate",
            "--regen-output",
            str(tmp_path),
        )
    assert "--regen-output must be a file path" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no usable conversation (records=0 kept=0"),
        ("\n  \n", "holds no usable conversation (records=0"),
        ('{"data": [{"id": "a", "conversations": []}]}', "skipped: malformed=1"),  # an object
        ("[]", "holds no usable conversation (records=0"),
        (json.dumps([{"id": "a", "conversations": [{"from": "gpt", "value": "x"}]}]), "no_reply"),
        (json.dumps([{"id": "a"}, "text", 3]), "skipped: malformed=3"),
    ],
)
def test_data_without_a_usable_conversation_fails_before_loading(
    tmp_path, text, message, capsys, no_model
):
    data = tmp_path / "data.json"
    data.write_text(text, encoding="utf-8")
    assert _run(data, tmp_path / "out") == 2  # was exit 0 with a "complete" set of 0 samples
    err = capsys.readouterr().err
    assert f"--data {data} holds no usable conversation" in err and message in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_selection_of_none_fails_before_loading(tmp_path, capsys, no_model):
    write_jsonl(tmp_path / "data.jsonl", word_conversations(3))
    assert _run(tmp_path / "data.jsonl", tmp_path / "out", "--offset", "3") == 2
    assert "the flags select none of the 3 usable conversations" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("lines", "where"),
    [
        ([DEEP], "data.json, line 1: a record is nested too deeply"),
        (['{"id": "a", "conversations": []}', DEEP], "data.json, line 2: a record is nested"),
        (['{"id": "a", "conversations": []}', "", DEEP], "data.json, line 3: a record is nested"),
        (["  42"], "data.json, line 1: expected a JSON array or JSON lines of objects, found '4'"),
        (["", '"text"'], "data.json, line 2: expected a JSON array or JSON lines"),
    ],
)
def test_unreadable_data_names_the_file_and_line(tmp_path, lines, where, capsys, no_model):
    data = tmp_path / "data.json"
    data.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match=r"nested too deeply|expected a JSON array") as error:
        load_sharegpt(data)
    assert where in str(error.value)
    assert _run(data, tmp_path / "out") == 2
    assert where in capsys.readouterr().err


def test_line_numbers_survive_the_reading_window():
    text = "\n".join([json.dumps(word_conversations(1)[0])] * 40 + [DEEP])
    with pytest.raises(ValueError, match=r"^line 41: a record is nested too deeply"):
        list(iter_raw_records(io.StringIO(text), ReadStats(), chunk_chars=64))


def test_text_that_is_not_utf8_names_the_file(tmp_path, capsys, no_model):
    data = tmp_path / "data.json"
    data.write_bytes(b'[{"id": "\xff\xfe"}]')
    assert _run(data, tmp_path / "out") == 2
    assert f"{data}: not UTF-8 text" in capsys.readouterr().err


# -- after loading: the target's own limits, and a capture that stores nothing ------------------


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ge_data_inputs") / "target"
    save_chat_target_dir(make_model("llama"), directory)
    return directory


def _capture(target_dir, data, outdir, *flags: str) -> int:
    common = ["--base-model-path", str(target_dir), "--dtype", "float32", "--device", "cpu"]
    return _run(data, outdir, *common, *flags)


def test_target_topk_beyond_the_vocabulary_names_the_flag(tmp_path, target_dir, capsys):
    write_jsonl(tmp_path / "data.jsonl", word_conversations(2))
    assert (
        _capture(target_dir, tmp_path / "data.jsonl", tmp_path / "out", "--target-topk", "97") == 2
    )
    assert "--target-topk must be in 0..96 (the target's vocabulary), got 97" in (
        capsys.readouterr().err
    )


def test_a_capture_that_stores_nothing_is_an_error_not_complete(tmp_path, target_dir, capsys):
    write_jsonl(tmp_path / "data.jsonl", word_conversations(3))
    outdir = tmp_path / "out"
    flags = ("--max-len", "4", "--length-policy", "drop")  # every conversation is longer
    assert _capture(target_dir, tmp_path / "data.jsonl", outdir, *flags) == 2
    assert "no sample was stored" in capsys.readouterr().err
    manifest = read_manifest(outdir)
    assert manifest.complete is False and manifest.num_samples == 0
    assert not (outdir / VOCAB_FILE).exists()


def test_a_corrupt_shard_is_named(tmp_path, target_dir, capsys):
    write_jsonl(tmp_path / "data.jsonl", word_conversations(4))
    outdir = tmp_path / "out"
    assert _capture(target_dir, tmp_path / "data.jsonl", outdir, "--shard-tokens", "50") == 0
    manifest = read_manifest(outdir)
    shard = outdir / manifest.shard_files[-1]
    shard.write_bytes(shard.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match=f"shard {shard}: "):
        vocab.counts_from_shards(outdir, manifest.shard_files, 96)
    with pytest.raises(SystemExit) as exit_info:
        vocab.main(["--outdir", str(outdir)])
    assert exit_info.value.code == 2
    assert f"shard {shard}: " in capsys.readouterr().err
    (outdir / "manifest.json").write_text("[]")
    with pytest.raises(SystemExit):
        vocab.main(["--outdir", str(outdir)])
    assert "manifest.json is not a manifest written by eagle.ge_data" in capsys.readouterr().err
