"""Feature capture end to end on a tiny random Llama: stored features against direct forwards,
manifest counts, resumption after a crash, vocabulary statistics, exclusion, length policies,
and the 2-worker allocation split against a one-process run."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from helpers import (
    VOCAB,
    make_model,
    save_chat_target_dir,
    word_conversations,
    write_jsonl,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from eagle.ge_data import allocation, capture
from eagle.ge_data.batching import bucket_by_length
from eagle.ge_data.feature_format import open_shard, read_manifest, read_vocab, target_fingerprint
from eagle.ge_data.main import load_conversations, main
from eagle.ge_data.options import build_parser, validate
from eagle.ge_data.render import render_example
from eagle.ge_data.sharegpt import Conversation
from eagle.ge_data.vocab import draft_vocab_from_counts

NUM_CONVERSATIONS = 12


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ge_data")
    save_chat_target_dir(make_model("llama"), root / "target")
    write_jsonl(root / "data.jsonl", word_conversations(NUM_CONVERSATIONS))
    return root


def generate(files, outdir, *extra: str) -> int:
    argv = [
        "--base-model-path", str(files / "target"), "--data", str(files / "data.jsonl"),
        "--outdir", str(outdir), "--dtype", "float32", "--batch-size", "3",
        "--shard-tokens", "100", "--quiet", *extra,
    ]  # fmt: skip
    return main(argv)


def read_samples(outdir) -> dict[str, list]:
    """Every stored sample, in storage order: id, input_ids, loss_mask, hidden, aux."""
    manifest = read_manifest(outdir)
    out: dict[str, list] = {"id": [], "input_ids": [], "loss_mask": [], "hidden": [], "aux": []}
    for shard in manifest.shards:
        with open_shard(outdir, shard.file) as f:
            ids = json.loads(f.metadata()["ids"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open)
        bounds = tensors["offsets"].tolist()
        assert bounds[0] == 0 and bounds[-1] == tensors["input_ids"].numel() == shard.tokens
        assert len(ids) == shard.samples == len(bounds) - 1
        out["id"] += ids
        for key in ("input_ids", "loss_mask", "hidden", "aux"):
            if key in tensors:
                out[key] += [tensors[key][a:b] for a, b in itertools.pairwise(bounds)]
    return out


@pytest.fixture(scope="module")
def one_shot(files, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("one_shot")
    assert generate(files, outdir) == 0
    return outdir


def test_stored_features_equal_a_direct_forward(files, one_shot):
    model = AutoModelForCausalLM.from_pretrained(files / "target", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(files / "target")
    records = {r["id"]: r for r in word_conversations(NUM_CONVERSATIONS)}
    samples = read_samples(one_shot)
    assert samples["id"] == [f"c{i}" for i in range(NUM_CONVERSATIONS)]  # input order
    for i, sample_id in enumerate(samples["id"]):
        turns = records[sample_id]["conversations"]
        conversation = Conversation(
            sample_id, tuple(("user" if t["from"] == "human" else "assistant", t["value"]) for t in turns)
        )  # fmt: skip
        expected = render_example(tokenizer, conversation)
        assert samples["input_ids"][i].dtype == torch.int32
        assert samples["loss_mask"][i].dtype == torch.uint8
        assert torch.equal(samples["input_ids"][i].long(), expected.input_ids)
        assert torch.equal(samples["loss_mask"][i].long(), expected.loss_mask)
        with torch.no_grad():
            states = model(expected.input_ids[None], output_hidden_states=True).hidden_states
        reference_aux = torch.cat([states[k][0] for k in (2, 2, 1)], dim=-1)
        assert samples["hidden"][i].dtype == torch.bfloat16
        torch.testing.assert_close(
            samples["hidden"][i].float(), states[-1][0], atol=2e-2, rtol=1e-2
        )
        torch.testing.assert_close(samples["aux"][i].float(), reference_aux, atol=2e-2, rtol=1e-2)


def test_manifest_records_the_target_and_the_counts(files, one_shot):
    manifest = json.loads((one_shot / "manifest.json").read_text())
    samples = read_samples(one_shot)
    model = AutoModelForCausalLM.from_pretrained(files / "target", dtype=torch.bfloat16)
    assert manifest["format"] == "eagle-features/1" and manifest["complete"]
    assert manifest["target"] == {
        "name_or_path": str(files / "target"),
        "fingerprint": target_fingerprint(
            model.config.to_json_string(), model.get_input_embeddings().weight
        ),  # same model loaded in another dtype: same fingerprint
        "num_layers": 4, "hidden_size": 32, "vocab_size": VOCAB,
    }  # fmt: skip
    assert manifest["feature_layers"] == {"hidden": [-1], "aux": [2, 2, 1]}
    assert manifest["dtype"] == "bfloat16" and manifest["regenerated"] is None
    assert manifest["template"] == "auto" and manifest["max_len"] == 2048
    assert (
        manifest["num_samples"]
        == NUM_CONVERSATIONS
        == sum(s["samples"] for s in manifest["shards"])
    )
    assert manifest["num_tokens"] == sum(len(x) for x in samples["input_ids"])
    assert manifest["num_loss_tokens"] == sum(int(m.sum()) for m in samples["loss_mask"])
    assert len(manifest["shards"]) > 2 and all(s["tokens"] >= 100 for s in manifest["shards"][:-1])


def test_fingerprint_tells_models_apart():
    a, b = make_model("llama", seed=0), make_model("llama", seed=1)
    fingerprint = lambda m: target_fingerprint(  # noqa: E731
        m.config.to_json_string(), m.get_input_embeddings().weight
    )
    assert fingerprint(a) != fingerprint(b)
    assert fingerprint(a) == fingerprint(a.to(torch.bfloat16))


def test_a_crashed_run_resumes_to_the_one_shot_result(files, one_shot, tmp_path, monkeypatch):
    outdir = tmp_path / "resumed"
    assert generate(files, outdir, "--limit", "4") == 0  # a shorter first run
    real, calls = capture.capture_batch, []

    def crash_on_the_sixth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(capture, "capture_batch", crash_on_the_sixth_batch)
    with pytest.raises(KeyboardInterrupt):  # batches of 1 in windows of 4: one window is stored
        generate(files, outdir, "--batch-size", "1")
    monkeypatch.setattr(capture, "capture_batch", real)
    partial = read_manifest(outdir)
    assert not partial.complete and 4 < partial.num_samples < NUM_CONVERSATIONS
    assert generate(files, outdir) == 0
    resumed, expected = read_samples(outdir), read_samples(one_shot)
    assert resumed["id"] == expected["id"]  # nothing duplicated, nothing lost, same order
    for key in ("input_ids", "loss_mask"):
        assert all(torch.equal(a, b) for a, b in zip(resumed[key], expected[key], strict=True))
    for key in ("hidden", "aux"):
        for a, b in zip(resumed[key], expected[key], strict=True):
            torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=1e-2)
    assert _vocab(outdir).counts.equal(_vocab(one_shot).counts)


def _vocab(outdir):
    return read_vocab(read_manifest(outdir))


def test_resuming_with_other_settings_names_the_flag(files, one_shot, capsys):
    assert generate(files, one_shot, "--max-len", "16") == 2
    assert "--max-len" in capsys.readouterr().err


def test_eagle1_only_in_float16(files, tmp_path):
    assert generate(files, tmp_path, "--variants", "eagle1", "--feature-dtype", "float16") == 0
    manifest = read_manifest(tmp_path)
    assert manifest.feature_layers.to_json() == {"hidden": [-1]} and manifest.dtype == "float16"
    with open_shard(tmp_path, manifest.shards[0].file) as f:
        assert set(f.keys()) == {"input_ids", "loss_mask", "offsets", "hidden"}
        assert f.get_tensor("hidden").dtype == torch.float16


def test_draft_vocabulary_by_hand():
    counts = torch.tensor([5, 0, 3, 3, 9, 1])
    d2t, t2d = draft_vocab_from_counts(counts, 3)  # most frequent: 4 (9), 0 (5), 2 (3, lower id)
    assert d2t.tolist() == [0 - 0, 2 - 1, 4 - 2]
    assert t2d.tolist() == [True, False, True, False, True, False]
    d2t, t2d = draft_vocab_from_counts(counts, 6)
    assert d2t.tolist() == [0] * 6 and bool(t2d.all())
    with pytest.raises(ValueError, match=r"1\.\.6"):
        draft_vocab_from_counts(counts, 7)


def test_vocab_file_counts_the_loss_tokens(files, one_shot, tmp_path):
    samples = read_samples(one_shot)
    expected = torch.zeros(VOCAB, dtype=torch.long)
    for ids, mask in zip(samples["input_ids"], samples["loss_mask"], strict=True):
        for token, m in zip(ids.tolist(), mask.tolist(), strict=True):
            expected[token] += m
    vocab = _vocab(one_shot)  # read_vocab checks the fingerprint against the manifest's
    assert vocab.counts.tolist() == expected.tolist()
    assert vocab.d2t.shape == (VOCAB,)  # 32000 clipped to the vocabulary
    assert generate(files, tmp_path, "--draft-vocab-size", "10", "--variants", "eagle1") == 0
    vocab = _vocab(tmp_path)
    kept = torch.arange(10) + vocab.d2t
    assert vocab.d2t.shape == (10,) and vocab.t2d.sum() == 10
    assert bool(vocab.t2d[kept].all()) and bool((kept.diff() > 0).all())
    assert vocab.counts[kept].min() >= vocab.counts[~vocab.t2d].max()


def test_benchmark_prompts_are_excluded(files, tmp_path):
    from eagle.benchmarks import load_questions

    question = load_questions("mt_bench")[3].turns[1]
    records = word_conversations(3)
    records[1]["conversations"][0]["value"] = "  " + question.replace(" ", "\n ")
    write_jsonl(tmp_path / "data.jsonl", records)
    parser = build_parser()
    for flags, kept in (([], ["c0", "c1", "c2"]), (["--exclude-mt-bench"], ["c0", "c2"])):
        args = parser.parse_args(["--data", str(tmp_path / "data.jsonl"), "--outdir", "x", *flags])
        validate(args, parser)
        assert [c.id for c in load_conversations(args)] == kept


def test_max_turns_keeps_first_turns(files, tmp_path):
    records = word_conversations(2)
    records[0]["conversations"] = records[0]["conversations"][:2] * 2  # two user turns
    write_jsonl(tmp_path / "data.jsonl", records)
    parser = build_parser()
    for flags, count in (([], 4), (["--max-turns", "1"], 2)):
        args = parser.parse_args(["--data", str(tmp_path / "data.jsonl"), "--outdir", "x", *flags])
        validate(args, parser)
        assert len(load_conversations(args)[0].turns) == count


@pytest.mark.parametrize("policy", ["truncate", "drop"])
def test_length_policies(files, tmp_path, policy):
    assert generate(files, tmp_path, "--max-len", "24", "--length-policy", policy) == 0
    lengths = [len(x) for x in read_samples(tmp_path)["input_ids"]]
    assert lengths and max(lengths) <= 24
    if policy == "truncate":
        assert lengths.count(24) >= 2 and len(lengths) == NUM_CONVERSATIONS
    else:
        assert len(lengths) < NUM_CONVERSATIONS


def test_batches_respect_sample_and_token_limits():
    lengths = [5, 50, 7, 30, 60, 2]
    assert bucket_by_length(range(6), lengths, 2, 100) == [[4], [1, 3], [2, 0], [5]]
    assert bucket_by_length(range(6), lengths, 8, 10) == [[4], [1], [3], [2], [0, 5]]
    assert bucket_by_length([5, 0, 2], lengths, 8, None) == [[2, 0, 5]]


def test_parts_merge_to_the_one_process_result(files, one_shot, tmp_path):
    """What allocation's workers do, run in this process: two parts, then the merge."""
    for part in ("1", "0"):
        assert generate(files, tmp_path, "--part", part, "--num-parts", "2") == 0
    assert (
        not (tmp_path / "manifest.json").exists() and not (tmp_path / "vocab.safetensors").exists()
    )
    allocation.merge(tmp_path, num_parts=2, draft_vocab_size=32000)
    check_split_equals_single(tmp_path, one_shot)
    assert generate(files, tmp_path) == 2  # a single run may not resume a split folder


@pytest.mark.slow
def test_allocation_with_two_cpu_workers_matches_one_process(files, one_shot, tmp_path):
    argv = [
        "--num-workers", "2", "--base-model-path", str(files / "target"),
        "--data", str(files / "data.jsonl"), "--outdir", str(tmp_path), "--dtype", "float32",
        "--batch-size", "3", "--shard-tokens", "100", "--quiet",
    ]  # fmt: skip
    assert allocation.main(argv) == 0
    check_split_equals_single(tmp_path, one_shot)


def check_split_equals_single(tmp_path, one_shot) -> None:
    manifest = read_manifest(tmp_path)
    assert manifest.source["num_parts"] == 2 and manifest.complete
    assert {name.split("-")[1] for name in manifest.shard_files} == {"part0", "part1"}
    split, single = read_samples(tmp_path), read_samples(one_shot)
    assert (
        sorted(split["id"]) == sorted(single["id"]) and len(set(split["id"])) == NUM_CONVERSATIONS
    )
    assert split["id"][:2] == ["c0", "c2"]  # worker 0 takes every other conversation
    by_id = dict(zip(single["id"], range(NUM_CONVERSATIONS), strict=True))
    for i, sample_id in enumerate(split["id"]):
        j = by_id[sample_id]
        assert torch.equal(split["input_ids"][i], single["input_ids"][j])
        torch.testing.assert_close(
            split["hidden"][i].float(), single["hidden"][j].float(), atol=2e-2, rtol=1e-2
        )
    assert _vocab(tmp_path).counts.equal(_vocab(one_shot).counts)
    single_manifest = read_manifest(one_shot)
    for key in ("num_samples", "num_tokens", "num_loss_tokens"):
        assert getattr(manifest, key) == getattr(single_manifest, key)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--variants", "eagle2"], "--variants"),
        (["--length-policy", "cut"], "--length-policy"),
        (["--aux-layers", "1,2"], "--aux-layers"),
        (["--part", "2", "--num-parts", "2"], "--part"),
        (["--regen-only"], "--regen-only needs --regenerate"),
        (["--max-turns", "0"], "--max-turns must be >= 1"),
    ],
)
def test_bad_flags_are_named(flags, message, capsys):
    with pytest.raises(SystemExit):
        main(["--outdir", "unused", *flags])
    assert message in capsys.readouterr().err
