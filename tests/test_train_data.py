"""Reading the eagle-features/1 format, the split, batch planning and padding."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import HIDDEN, VOCAB, greedy_samples, make_target, write_feature_data

from eagle.ge_data.feature_format import (
    DataFormatError,
    check_target,
    read_manifest,
    read_vocab,
    target_fingerprint,
    write_manifest,
)
from eagle.ge_data.vocab import draft_vocab_from_counts
from eagle.train.data import (
    FeatureDataset,
    collate,
    draft_vocab,
    merge_vocabs,
    plan_batches,
    shard_batches,
    split_samples,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    target = make_target("llama")
    samples = greedy_samples(target, 7, prompt_len=4, new_tokens=6)
    samples[2] = (samples[2][0][:7], samples[2][1][:7])  # a shorter sample
    directory = tmp_path_factory.mktemp("features")
    write_feature_data(target, directory, samples, shard_samples=3)
    return directory, samples, target


def test_samples_round_trip_across_shards(data):
    directory, samples, target = data
    manifest = read_manifest(directory)
    assert manifest.aux_layers == (2, 2, 1) and len(manifest.shards) == 3
    dataset = FeatureDataset(manifest, max_len=100, with_aux=True)
    assert len(dataset) == 7 and dataset.lengths[2] == 7
    item = dataset[4]
    ids, mask = samples[4]
    assert torch.equal(item["input_ids"], ids) and torch.equal(item["loss_mask"], mask.bool())
    with torch.no_grad():
        states = target.model(ids[None], output_hidden_states=True).hidden_states
    assert torch.equal(item["hidden"], states[-1][0].bfloat16())
    assert item["aux"].shape == (10, 3 * HIDDEN)
    assert torch.equal(item["aux"][:, HIDDEN : 2 * HIDDEN], states[2][0].bfloat16())


def test_truncation_and_missing_aux(data, tmp_path):
    directory, _, target = data
    assert FeatureDataset(read_manifest(directory), max_len=5, with_aux=False).lengths == [5] * 7
    write_feature_data(target, tmp_path, greedy_samples(target, 2, 4, 4), aux_layers=None)
    with pytest.raises(DataFormatError, match="EAGLE-3 features"):
        FeatureDataset(read_manifest(tmp_path), max_len=10, with_aux=True)


def test_manifest_checks(data, tmp_path):
    directory, _, target = data
    manifest = read_manifest(directory)
    fingerprint = target_fingerprint(target.config.to_json_string(), target.embed_tokens.weight)
    check_target(manifest, fingerprint, VOCAB, HIDDEN, 4)
    with pytest.raises(DataFormatError, match="hidden_size: data 32 vs target 64"):
        check_target(manifest, fingerprint, VOCAB, 64, 4)
    other = make_target("llama", seed=1)
    other_print = target_fingerprint(other.config.to_json_string(), other.embed_tokens.weight)
    with pytest.raises(DataFormatError, match=r"another target.*fingerprint"):
        check_target(manifest, other_print, VOCAB, HIDDEN, 4)
    with pytest.raises(DataFormatError, match=r"no manifest\.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataFormatError, match="eagle-features/1"):
        read_manifest(tmp_path)


def test_split_is_deterministic_disjoint_and_complete():
    train, val = split_samples(100, 0.1, seed=3)
    assert len(val) == 10 and sorted(train + val) == list(range(100))
    assert (train, val) == split_samples(100, 0.1, seed=3)
    assert val != split_samples(100, 0.1, seed=4)[1]
    assert split_samples(5, 0.01, 0)[1] and not split_samples(5, 0.0, 0)[1]


def test_batches_respect_caps_and_cover_every_sample_once():
    lengths = [5, 50, 7, 30, 30, 8, 100, 12, 9, 40]
    batches = plan_batches(
        lengths, list(range(10)), batch_size=3, batch_tokens=80, seed=0, shuffle=True
    )
    assert sorted(i for b in batches for i in b) == list(range(10))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= 3 and (len(batch) == 1 or longest * len(batch) <= 80)
    assert batches == plan_batches(lengths, list(range(10)), 3, 80, seed=0, shuffle=True)
    by_samples = plan_batches(lengths, list(range(10)), 4, None, seed=0, shuffle=False)
    assert [len(b) for b in by_samples] == [4, 4, 2]


def test_sharding_gives_every_process_whole_accumulation_groups():
    batches = [[i] for i in range(11)]
    ranks = [shard_batches(batches, r, 2, group=2) for r in range(2)]
    assert [len(r) for r in ranks] == [4, 4]
    first, second = ({i for batch in r for i in batch} for r in ranks)
    assert not first & second


def test_collate_pads_for_the_unrolled_shifts(data):
    directory, _, _ = data
    dataset = FeatureDataset(read_manifest(directory), max_len=100, with_aux=True)
    batch = collate([dataset[1], dataset[2]], extra=4)
    assert batch["input_ids"].shape == (2, 14) and batch["hidden"].shape == (2, 14, HIDDEN)
    assert batch["aux"].shape == (2, 10, 3 * HIDDEN)
    assert batch["lengths"].tolist() == [10, 7]
    assert not batch["loss_mask"][1, 7:].any() and not batch["input_ids"][1, 7:].any()


def test_draft_vocabulary_maps(data):
    counts = torch.tensor([5, 0, 9, 9, 1, 7])
    d2t, t2d = draft_vocab_from_counts(counts, 3)
    assert (torch.arange(3) + d2t).tolist() == [2, 3, 5]
    assert t2d.tolist() == [False, False, True, True, False, True]
    directory, _, _ = data
    vocab = read_vocab(read_manifest(directory))
    stored = draft_vocab(vocab, 64, VOCAB)
    assert torch.equal(stored[0], vocab.d2t) and stored[1].sum() == 64
    recomputed_d2t, recomputed_t2d = draft_vocab(vocab, 10, VOCAB)
    assert recomputed_d2t.shape == (10,) and recomputed_t2d.sum() == 10
    full_d2t, full_t2d = draft_vocab(None, VOCAB, VOCAB)
    assert not full_d2t.any() and full_t2d.all()
    with pytest.raises(DataFormatError, match=r"vocab\.safetensors"):
        draft_vocab(None, 10, VOCAB)


def test_vocabulary_of_another_target_is_refused(data, tmp_path):
    _, samples, target = data
    write_feature_data(target, tmp_path, samples[:2])
    manifest = read_manifest(tmp_path)
    forged = dataclasses.replace(manifest.target, fingerprint="0" * 64)
    write_manifest(dataclasses.replace(manifest, target=forged))
    with pytest.raises(DataFormatError, match="another target"):
        read_vocab(read_manifest(tmp_path))


def test_several_folders_are_one_set_in_order(data, tmp_path):
    directory, _, target = data
    more = greedy_samples(target, 3, prompt_len=5, new_tokens=4)
    write_feature_data(target, tmp_path, more, shard_samples=2)
    one, two = read_manifest(directory), read_manifest(tmp_path)
    both = FeatureDataset([one, two], max_len=100, with_aux=True)
    alone = FeatureDataset(two, max_len=100, with_aux=True)
    assert (
        len(both) == 10 and both.lengths == FeatureDataset(one, 100, True).lengths + alone.lengths
    )
    for i in range(3):  # the second folder's samples follow the first's, read from its shards
        for name, value in alone[i].items():
            assert torch.equal(both[7 + i][name], value)
        assert torch.equal(both[7 + i]["input_ids"], more[i][0])


def test_several_folders_must_store_the_same_features(data, tmp_path):
    directory, _, target = data
    write_feature_data(target, tmp_path, greedy_samples(target, 2, 4, 4), aux_layers=(1, 2, 3))
    with pytest.raises(DataFormatError, match="differ in feature layers"):
        FeatureDataset([read_manifest(directory), read_manifest(tmp_path)], 100, with_aux=True)


def test_merged_vocabulary_ranks_the_summed_counts(data, tmp_path):
    _, _, target = data
    vocabs = []
    for i, count in enumerate((3, 4)):  # with the target's argmax counts (stored with its top-k)
        folder = tmp_path / str(i)
        write_feature_data(target, folder, greedy_samples(target, count, 3, 8), target_topk=4)
        vocabs.append(read_vocab(read_manifest(folder)))
    one, two = vocabs
    merged = merge_vocabs([one, two])
    assert torch.equal(merged.counts, one.counts + two.counts)
    assert torch.equal(merged.argmax_counts, one.argmax_counts + two.argmax_counts)
    d2t, t2d = draft_vocab_from_counts(one.argmax_counts + two.argmax_counts, 64)
    assert torch.equal(merged.d2t, d2t) and torch.equal(merged.t2d, t2d)
    assert merge_vocabs([one]) is one and merge_vocabs([one, None]) is None
