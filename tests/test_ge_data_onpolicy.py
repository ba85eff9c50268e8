"""On-policy capture in one pass (eagle.ge_data.onpolicy) against its slow reference: each prompt
decoded alone by full recomputation, then captured by the ordinary capture forward."""

from __future__ import annotations

import pytest
import torch
from helpers import VOCAB, make_target

from eagle.ge_data.capture import CaptureSettings
from eagle.ge_data.onpolicy import answer_batch, reference_samples
from eagle.ge_data.regenerate import RegenSettings
from eagle.model.generate import GenerationConfig
from eagle.model.verify import SamplingParams


def _settings(max_new_tokens: int, max_len: int, batch_size: int = 8) -> RegenSettings:
    """Greedy answers of at most ``max_new_tokens``, samples of at most ``max_len`` tokens."""
    generation = GenerationConfig(max_new_tokens=max_new_tokens)
    return RegenSettings(generation, batch_size=batch_size, max_prompt_len=max_len)


def _prompts(seed: int, count: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 14, (count,), generator=g).tolist()
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]


def _frequent_tokens(target, prompts, settings, capture, how_many: int) -> set[int]:
    """Tokens the target emits often without stops: as end ids they end answers at varied
    lengths, so rows leave the batch at different steps."""
    free = answer_batch(target, prompts, set(), 0, capture, settings, torch.float32)
    counts = torch.bincount(torch.cat([s.answer_ids for s in free]), minlength=VOCAB)
    return set(counts.topk(how_many).indices.tolist())


def _stored_samples(out) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every sample stored in the folder ``out``: id -> (input_ids, loss_mask)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    manifest = json.loads((out / "manifest.json").read_text())
    samples = {}
    for entry in manifest["shards"]:
        shard = load_file(out / entry["file"])
        with safe_open(out / entry["file"], "pt") as handle:
            ids_in_shard = json.loads(handle.metadata()["ids"])
        offsets = shard["offsets"].tolist()
        for i, sample_id in enumerate(ids_in_shard):
            span = slice(offsets[i], offsets[i + 1])
            samples[sample_id] = shard["input_ids"][span].long(), shard["loss_mask"][span]
    return samples


@pytest.mark.parametrize(
    ("arch", "attn", "aux"),
    [("llama", "sdpa", (1, 2, 3)), ("qwen3", "sdpa", (1, 2, 3)), ("llama", "eager", None)],
)
def test_one_pass_equals_decode_then_capture(arch, attn, aux):
    target = make_target(arch, seed=1, attn=attn)
    capture = CaptureSettings(aux, torch.float32, target_topk=5)
    settings = _settings(max_new_tokens=12, max_len=22)
    prompts = _prompts(seed=2, count=6)
    eos = _frequent_tokens(target, prompts, settings, capture, how_many=2)
    fast = answer_batch(target, prompts, eos, 0, capture, settings, torch.float32)
    slow = reference_samples(target, prompts, eos, capture, settings)
    lengths = {s.answer_ids.numel() for s in fast}
    assert len(lengths) > 1, "the end ids should stop rows at different steps"
    assert any(s.ended for s in fast) and not all(s.ended for s in fast)
    for f, s in zip(fast, slow, strict=True):
        assert torch.equal(f.input_ids, s.input_ids)
        assert f.prompt_len == s.prompt_len and f.ended == s.ended
        assert torch.equal(f.loss_mask, s.loss_mask)
        assert torch.allclose(f.features, s.features, atol=1e-4, rtol=1e-4)
        assert torch.equal(f.topk.ids, s.topk.ids)
        assert torch.allclose(f.topk.probs.float(), s.topk.probs.float(), atol=2e-3)


def test_budget_and_max_len_cut_answers():
    target = make_target("llama", seed=3)
    capture = CaptureSettings(None, torch.float32, target_topk=0)
    prompts = [[5, 6, 7], [8] * 9]
    out = answer_batch(target, prompts, set(), 0, capture, _settings(6, max_len=12))
    assert [s.answer_ids.numel() for s in out] == [6, 3]
    assert not any(s.ended for s in out)
    assert all(s.topk is None for s in out)
    assert [s.features.shape[0] for s in out] == [9, 12]


def test_a_prompt_at_max_len_is_refused():
    target = make_target("llama", seed=3)
    capture = CaptureSettings(None, torch.float32)
    with pytest.raises(ValueError, match="max_prompt_len"):
        answer_batch(target, [[4] * 8], set(), 0, capture, _settings(4, max_len=8))


def test_sampled_settings_are_refused():
    target = make_target("llama", seed=3)
    capture = CaptureSettings(None, torch.float32)
    sampled = RegenSettings(GenerationConfig(SamplingParams(temperature=0.7)), max_prompt_len=8)
    with pytest.raises(ValueError, match="temperature must be 0"):
        answer_batch(target, [[4] * 3], set(), 0, capture, sampled)


def test_ge_data_answers_first_turns_in_one_pass(tmp_path):
    """`python -m eagle.ge_data --regenerate --max-turns 1` stores what the target decoded: the
    prompt rendered with the generation prompt, then the greedy answer ids up to the end id,
    with the loss on the answer; the JSON lines hold the answer text; a rerun stores nothing
    twice."""
    import json

    from helpers import make_model, save_chat_target_dir, word_conversations, write_jsonl
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from eagle.ge_data.main import main

    save_chat_target_dir(make_model("llama", seed=3), tmp_path / "target")
    write_jsonl(tmp_path / "data.jsonl", word_conversations(5, seed=1))
    argv = [
        "--base-model-path", str(tmp_path / "target"), "--data", str(tmp_path / "data.jsonl"),
        "--outdir", str(tmp_path / "out"), "--dtype", "float32", "--regenerate",
        "--max-turns", "1", "--regen-max-new-tokens", "6", "--regen-batch-size", "2",
        "--variants", "eagle3", "--aux-layers", "1,2,3", "--target-topk", "4", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_samples"] == 5
    shard = load_file(tmp_path / "out" / manifest["shards"][0]["file"])
    records = [json.loads(line) for line in (tmp_path / "out" / "regenerated.jsonl").open()]
    assert len(records) == 5
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "target")
    offsets = shard["offsets"].tolist()
    answers = {r["conversations"][1]["value"] for r in records}
    for i in range(5):
        ids = shard["input_ids"][offsets[i] : offsets[i + 1]].long()
        mask = shard["loss_mask"][offsets[i] : offsets[i + 1]].bool()
        answer = ids[mask].tolist()
        assert 1 <= len(answer) <= 6 and not mask[: mask.int().argmax()].any()
        text = tokenizer.decode([t for t in answer if t != 2], skip_special_tokens=True).strip()
        assert text in answers
    assert shard["aux"].shape == (offsets[-1], 3 * 32) and "hidden" not in shard
    assert main(argv) == 0  # resumed: everything is stored already
    again = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert again["num_samples"] == 5 and len(again["shards"]) == len(manifest["shards"])


def test_ge_data_captures_written_answers_and_decodes_only_the_missing(tmp_path, caplog):
    """A regenerated file that already holds some answers (a restored campaign file, an
    interrupted run): those answers are captured as written, and only the conversations without
    one are decoded, in one pass; each id is stored once and written once."""
    import json

    from helpers import make_model, save_chat_target_dir, word_conversations, write_jsonl
    from transformers import AutoTokenizer

    from eagle.ge_data.main import main

    save_chat_target_dir(make_model("llama", seed=3), tmp_path / "target")
    records = word_conversations(5, seed=1)
    write_jsonl(tmp_path / "data.jsonl", records)
    out = tmp_path / "out"
    out.mkdir()
    planted = {"c1": "w7 w8 w9 w10 w11 w12 w13", "c3": "w30 w31"}  # not what the model says
    write_jsonl(
        out / "regenerated.jsonl",
        [
            {"id": r["id"], "conversations": [r["conversations"][0], {"from": "gpt", "value": v}]}
            for r in records
            if (v := planted.get(r["id"])) is not None
        ],
    )
    argv = [
        "--base-model-path", str(tmp_path / "target"), "--data", str(tmp_path / "data.jsonl"),
        "--outdir", str(out), "--dtype", "float32", "--regenerate",
        "--max-turns", "1", "--regen-max-new-tokens", "6", "--regen-batch-size", "2",
        "--variants", "eagle3", "--aux-layers", "1,2,3", "--target-topk", "4", "--quiet",
    ]  # fmt: skip
    with caplog.at_level("INFO", logger="eagle.ge_data"):
        assert main(argv) == 0
    assert "captured 2 samples" in caplog.text  # the planted answers, by the capture forward
    assert "answered and captured 3 conversations in one pass" in caplog.text
    assert "regenerated 3 conversations" not in caplog.text  # no batched generate first
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_samples"] == 5
    written = [json.loads(line) for line in (out / "regenerated.jsonl").open()]
    assert sorted(r["id"] for r in written) == [f"c{i}" for i in range(5)]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "target")
    answers = {}
    for sample_id, (ids, mask) in _stored_samples(out).items():
        answer = [t for t in ids[mask.bool()].tolist() if t != 2]
        answers[sample_id] = tokenizer.decode(answer, skip_special_tokens=True).strip()
    assert sorted(answers) == [f"c{i}" for i in range(5)]
    for sample_id, text in planted.items():
        assert answers[sample_id] == text  # captured from the file, not decoded again
    decoded = {r["id"]: r["conversations"][1]["value"] for r in written}
    for sample_id in ("c0", "c2", "c4"):
        assert answers[sample_id] == decoded[sample_id] != planted.get(sample_id)


def test_ge_data_answers_the_last_turn_after_the_given_ones(tmp_path, caplog):
    """`--max-turns 2 --answer-last-turn`: the first exchange stays as the data has it, the
    target answers the second question in one pass and the loss covers that answer alone; a
    conversation with one question is skipped. Captured again from the written answers (a
    restored campaign file), the loss still covers the last answer alone."""
    import json
    import shutil

    from helpers import make_model, save_chat_target_dir, word_conversations, write_jsonl
    from transformers import AutoTokenizer

    from eagle.chat.templates import prompt_ids, resolve_template
    from eagle.ge_data.main import main

    save_chat_target_dir(make_model("llama", seed=3), tmp_path / "target")
    records = word_conversations(8, seed=4)
    write_jsonl(tmp_path / "data.jsonl", records)
    two = {r["id"]: r for r in records if len(r["conversations"]) >= 4}
    assert 2 <= len(two) < len(records)  # both kinds are present

    def run(out):
        argv = [
            "--base-model-path", str(tmp_path / "target"), "--data", str(tmp_path / "data.jsonl"),
            "--outdir", str(out), "--dtype", "float32", "--regenerate", "--max-turns", "2",
            "--answer-last-turn", "--regen-max-new-tokens", "6", "--regen-batch-size", "2",
            "--variants", "eagle3", "--aux-layers", "1,2,3", "--target-topk", "4", "--quiet",
        ]  # fmt: skip
        assert main(argv) == 0
        return _stored_samples(out)

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "target")
    template = resolve_template("auto", tokenizer)
    samples = run(tmp_path / "out")
    assert sorted(samples) == sorted(two)
    written = {
        json.loads(line)["id"]: json.loads(line)["conversations"]
        for line in (tmp_path / "out" / "regenerated.jsonl").open()
    }
    assert sorted(written) == sorted(two)
    for sample_id, (ids, mask) in samples.items():
        given = two[sample_id]["conversations"]
        assert written[sample_id][:3] == given[:3]  # the first exchange and the question as given
        roles = {"human": "user", "gpt": "assistant"}
        messages = [{"role": roles[t["from"]], "content": t["value"]} for t in given[:3]]
        prompt = prompt_ids(tokenizer, template, messages)
        assert ids[: len(prompt)].tolist() == prompt
        assert not mask[: len(prompt)].any() and mask[len(prompt) :].all()  # the answer alone
        answer = tokenizer.decode([t for t in ids[len(prompt) :].tolist() if t != 2])
        assert answer.strip() == written[sample_id][3]["value"]

    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(tmp_path / "out" / "regenerated.jsonl", again / "regenerated.jsonl")
    with caplog.at_level("INFO", logger="eagle.ge_data"):
        captured = run(again)
    assert "answered and captured 0 conversations" in caplog.text  # all came from the file
    for sample_id, (_ids, mask) in captured.items():
        runs = torch.diff(torch.cat([torch.zeros(1), mask.float(), torch.zeros(1)])).abs().sum()
        assert runs == 2  # one masked span: the last answer (and its end-of-turn token) ...
        messages = [{"role": roles[t["from"]], "content": t["value"]} for t in written[sample_id]]
        prompt = prompt_ids(tokenizer, template, messages[:3])
        assert int(mask.argmax()) == len(prompt)  # ... which starts after the second question
