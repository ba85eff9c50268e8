"""The ``eagle-features/1`` folder: the manifest's JSON layout read and written unchanged, its
checks, resuming and merging, shards and the vocabulary file, all without a model."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open

from eagle.ge_data.feature_format import (
    DataFormatError,
    ManifestMismatchError,
    ShardEntry,
    StoredSample,
    TopK,
    Vocabulary,
    existing_manifest,
    merge_manifests,
    new_manifest,
    open_manifest,
    pack_samples,
    read_manifest,
    read_vocab,
    shard_name,
    shard_offsets,
    stored_ids,
    write_manifest,
    write_shard,
    write_vocab,
)

TARGET = {
    "name_or_path": "smollm2-135m-instruct", "fingerprint": "d789" + "0" * 60,
    "num_layers": 30, "hidden_size": 576, "vocab_size": 8,
}  # fmt: skip
SETTINGS = {
    "target": TARGET,
    "template": "auto",
    "max_len": 1024,
    "dtype": "bfloat16",
    "feature_layers": {"hidden": [], "aux": [2, 15, 27]},
    "target_topk": 32,
    "regenerated": {"max_new_tokens": 256, "temperature": 0.0, "file": "regenerated.jsonl"},
    "source": {"data": "sharegpt", "offset": 0, "seed": 0, "part": None, "num_parts": None},
}
# a manifest as eagle.ge_data wrote it before this module existed (runs/val, shortened)
STORED = {
    "format": "eagle-features/1", **SETTINGS, "num_samples": 5, "num_tokens": 90,
    "num_loss_tokens": 60,
    "shards": [
        {"file": "shard-00000.safetensors", "samples": 3, "tokens": 50, "loss_tokens": 31},
        {"file": "shard-00001.safetensors", "samples": 2, "tokens": 40, "loss_tokens": 29},
    ],
    "complete": True, "created": "2026-11-30T15:08:00+00:00",
    "updated": "2026-11-30T15:51:57+00:00", "eagle_version": "0.1.0",
}  # fmt: skip


def test_a_stored_manifest_reads_and_writes_back_unchanged(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps(STORED, indent=1))
    manifest = read_manifest(tmp_path)
    assert manifest.target.vocab_size == 8 and manifest.aux_layers == (2, 15, 27)
    assert not manifest.has_hidden and manifest.target_topk == 32
    assert (manifest.num_samples, manifest.num_tokens, manifest.num_loss_tokens) == (5, 90, 60)
    assert manifest.to_json() == STORED
    assert list(manifest.to_json()) == list(STORED)  # same key order on disk
    write_manifest(manifest, "copy.json")
    written = json.loads((tmp_path / "copy.json").read_text())
    assert written.pop("updated") != STORED["updated"]  # stamped by the writer
    assert written == {k: v for k, v in STORED.items() if k != "updated"}


def _broken(change):
    record = copy.deepcopy(STORED)
    change(record)
    return record


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([], "is not a manifest written by eagle.ge_data"),
        ({**STORED, "format": "eagle-features/0"}, "expected 'eagle-features/1'"),
        ({**STORED, "shard_count": 2}, r"unknown keys \['shard_count'\]"),
        (_broken(lambda r: r.pop("source")), r"missing keys \['source'\]"),
        ({**STORED, "max_len": "1024"}, "max_len has the wrong type"),
        ({**STORED, "complete": 1}, "complete has the wrong type"),
        ({**STORED, "num_tokens": 91}, "num_tokens is 91 but its shards add up to 90"),
        (_broken(lambda r: r["target"].pop("fingerprint")), r"target: .*'fingerprint'"),
        (_broken(lambda r: r["shards"][1].update(file="../x")), "'../x' is not a file name"),
        (_broken(lambda r: r["feature_layers"].update(aux=["2"])), "list of layer indices"),
    ],
)
def test_a_malformed_manifest_is_refused_naming_the_problem(tmp_path, record, message):
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(DataFormatError, match=message):
        read_manifest(tmp_path)


def test_missing_and_unreadable_manifests(tmp_path):
    assert existing_manifest(tmp_path) is None
    with pytest.raises(DataFormatError, match=r"no manifest\.json in"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": ')
    with pytest.raises(DataFormatError, match=r"is not a manifest written by eagle\.ge_data"):
        existing_manifest(tmp_path)


def test_resuming_checks_every_setting_but_the_spelling_of_the_target(tmp_path):
    first = open_manifest(tmp_path, "manifest.json", SETTINGS)
    assert first.shards == [] and not first.complete
    write_manifest(first)
    respelt = {**SETTINGS, "target": {**TARGET, "name_or_path": "/models/smollm2"}}
    assert open_manifest(tmp_path, "manifest.json", respelt).created == first.created
    for key, value, flag in (
        ("max_len", 512, "--max-len"),
        ("target_topk", 0, "--target-topk"),  # absent from the JSON when 0
        ("source", {**SETTINGS["source"], "seed": 1}, "--data / --offset"),
    ):
        settings = {k: v for k, v in {**SETTINGS, key: value}.items() if v != 0}
        with pytest.raises(ManifestMismatchError, match=flag):
            open_manifest(tmp_path, "manifest.json", settings)


def test_worker_manifests_merge_into_one(tmp_path):
    parts = []
    for part in (0, 1):
        source = {**SETTINGS["source"], "part": part, "num_parts": 2}
        regenerated = {**SETTINGS["regenerated"], "file": f"regenerated-part{part}.jsonl"}
        manifest = new_manifest(
            tmp_path, {**SETTINGS, "source": source, "regenerated": regenerated}
        )
        manifest.shards.append(ShardEntry(**STORED["shards"][part]))
        manifest.complete = True
        parts.append(manifest)
    merged = merge_manifests(parts)
    assert merged.num_samples == 5 and merged.source["part"] is None and merged.complete
    assert merged.source["num_parts"] == 2 and merged.shards == parts[0].shards + parts[1].shards
    assert merged.regenerated["file"] == ["regenerated-part0.jsonl", "regenerated-part1.jsonl"]
    other = new_manifest(tmp_path, {**SETTINGS, "max_len": 8})
    with pytest.raises(ManifestMismatchError, match="--max-len"):
        merge_manifests([parts[0], other])


def test_shards_round_trip_with_their_ids(tmp_path):
    samples = [
        StoredSample(
            f"c{i}", torch.arange(n), torch.ones(n, dtype=torch.long), torch.randn(n, 4),
            None, TopK(torch.zeros(n, 2, dtype=torch.int32), torch.ones(n, 2).half()),
        )
        for i, n in enumerate((3, 5))
    ]  # fmt: skip
    name = shard_name(0, part=1)
    assert name == "shard-part1-00000.safetensors" and shard_name(12) == "shard-00012.safetensors"
    entry = write_shard(tmp_path, name, pack_samples(samples), [s.id for s in samples])
    assert (entry.file, entry.samples, entry.tokens, entry.loss_tokens) == (name, 2, 8, 8)
    assert shard_offsets(tmp_path, name) == [0, 3, 8]
    manifest = new_manifest(tmp_path, SETTINGS)
    manifest.shards.append(entry)
    assert stored_ids(manifest) == ["c0", "c1"]
    with safe_open(tmp_path / name, "pt") as f:
        assert set(f.keys()) == {
            "input_ids",
            "loss_mask",
            "offsets",
            "hidden",
            "topk_ids",
            "topk_probs",
        }
        assert f.get_tensor("input_ids").dtype == torch.int32
        assert f.get_tensor("loss_mask").dtype == torch.uint8
    (tmp_path / name).write_bytes(b"not a shard")
    with pytest.raises(DataFormatError, match=f"shard {tmp_path / name}: "):
        shard_offsets(tmp_path, name)


def test_pack_samples_refuses_a_field_stored_for_some_samples_only():
    # it used to look at the first sample only: hidden on the first and not the second failed
    # inside torch.cat, and hidden on the second only was dropped without a word
    def sample(i, hidden):
        return StoredSample(f"c{i}", torch.arange(2), torch.ones(2), hidden, None)

    with_hidden, without = sample(0, torch.randn(2, 4)), sample(1, None)
    for samples in ([with_hidden, without], [without, with_hidden]):
        with pytest.raises(ValueError, match="hidden is stored for 1 of 2 samples"):
            pack_samples(samples)
    assert "hidden" not in pack_samples([without, without])


def test_vocabulary_file_round_trip_and_target_check(tmp_path):
    manifest = new_manifest(tmp_path, SETTINGS)
    assert read_vocab(manifest) is None
    counts = torch.tensor([5, 0, 9, 9, 1, 7, 0, 2])
    vocab = Vocabulary(
        counts, torch.tensor([2, 2, 3]), counts > 6, TARGET["fingerprint"], counts.flip(0)
    )
    write_vocab(tmp_path, vocab)
    back = read_vocab(manifest)
    for name in ("counts", "d2t", "t2d", "argmax_counts"):
        assert torch.equal(getattr(back, name), getattr(vocab, name))
    assert back.counted_on == "target_argmax" and back.fingerprint == TARGET["fingerprint"]
    with safe_open(tmp_path / "vocab.safetensors", "pt") as f:
        assert f.metadata() == {
            "fingerprint": TARGET["fingerprint"], "draft_vocab_size": "3", "vocab_size": "8",
            "counted_on": "target_argmax",
        }  # fmt: skip
    other = new_manifest(tmp_path, {**SETTINGS, "target": {**TARGET, "fingerprint": "0" * 64}})
    with pytest.raises(DataFormatError, match="made for another target"):
        read_vocab(other)
