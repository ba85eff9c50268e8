"""Regeneration on a tiny random Llama: batched answers equal a plain one-conversation greedy
reference turn by turn, the output resumes after an interruption (and after a cut last line),
sampling is reproducible, and regenerated data flows into capture."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import make_model, save_chat_target_dir, word_conversations, write_jsonl
from transformers import AutoModelForCausalLM, AutoTokenizer

from eagle.ge_data.feature_format import read_manifest
from eagle.ge_data.main import main
from eagle.ge_data.sharegpt import Conversation, with_unique_ids

NUM = 6
NEW_TOKENS = 5
EOS = 2


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("regen")
    save_chat_target_dir(make_model("llama", seed=3), root / "target")
    write_jsonl(root / "data.jsonl", word_conversations(NUM, seed=1))
    return root


def regenerate(files, outdir, *extra: str) -> int:
    argv = [
        "--base-model-path", str(files / "target"), "--data", str(files / "data.jsonl"),
        "--outdir", str(outdir), "--dtype", "float32", "--regenerate", "--regen-only",
        "--regen-max-new-tokens", str(NEW_TOKENS), "--regen-batch-size", "4", "--quiet", *extra,
    ]  # fmt: skip
    return main(argv)


def read_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def reference_answers(files, record: dict) -> list[str]:
    """Slow reference: one conversation at a time, unpadded greedy generate, turn by turn."""
    model = AutoModelForCausalLM.from_pretrained(files / "target", dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(files / "target")
    messages, answers = [], []
    for turn in record["conversations"][::2]:
        messages.append({"role": "user", "content": turn["value"]})
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(
                prompt, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=EOS,
                pad_token_id=EOS,
            )[0, prompt.shape[1] :].tolist()  # fmt: skip
        answer = out[: out.index(EOS)] if EOS in out else out
        answer = tokenizer.decode(answer, skip_special_tokens=True).strip()
        if not answer:
            break
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
    return answers


@pytest.fixture(scope="module")
def one_shot(files, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("regen_one_shot")
    assert regenerate(files, outdir) == 0
    return outdir


def test_answers_are_the_targets_greedy_continuations(files, one_shot):
    records = {r["id"]: r for r in word_conversations(NUM, seed=1)}
    lines = read_lines(one_shot / "regenerated.jsonl")
    assert sorted(line["id"] for line in lines) == sorted(records)
    for line in lines:
        source = records[line["id"]]
        turns = line["conversations"]
        assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
        users = [t["value"] for t in source["conversations"][::2]]
        assert [t["value"] for t in turns[::2]] == users[: len(turns) // 2]
        assert [t["value"] for t in turns[1::2]] == reference_answers(files, source)
    assert any(len(line["conversations"]) > 2 for line in lines)  # multi-turn covered
    assert not (one_shot / "manifest.json").exists()  # --regen-only stores no features


def test_regeneration_resumes_without_redoing_conversations(files, one_shot, tmp_path):
    assert regenerate(files, tmp_path, "--limit", "3") == 0
    first = (tmp_path / "regenerated.jsonl").read_text()
    with open(tmp_path / "regenerated.jsonl", "a") as stream:
        stream.write('{"id": "c5", "conversations": [{"from": "hu')  # a write cut by a crash
    assert regenerate(files, tmp_path) == 0
    text = (tmp_path / "regenerated.jsonl").read_text()
    assert text.startswith(first)
    lines = read_lines(tmp_path / "regenerated.jsonl")
    assert len(lines) == NUM == len({line["id"] for line in lines})
    expected = {line["id"]: line for line in read_lines(one_shot / "regenerated.jsonl")}
    assert all(line == expected[line["id"]] for line in lines)


def test_sampled_regeneration_is_reproducible(files, one_shot, tmp_path):
    sampled = ("--regen-temperature", "1.0", "--regen-top-p", "0.9", "--regen-seed", "7")
    for name in ("a", "b"):
        assert regenerate(files, tmp_path / name, *sampled) == 0
    a, b = ((tmp_path / n / "regenerated.jsonl").read_text() for n in ("a", "b"))
    assert a == b
    assert a != (one_shot / "regenerated.jsonl").read_text()  # and not greedy


def test_regenerated_conversations_are_captured(files, one_shot, tmp_path):
    argv = [
        "--base-model-path", str(files / "target"), "--data", str(files / "data.jsonl"),
        "--outdir", str(tmp_path), "--dtype", "float32", "--regenerate", "--regen-max-new-tokens",
        str(NEW_TOKENS), "--regen-output", str(one_shot / "regenerated.jsonl"), "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0  # reuses the finished file: nothing is generated again
    manifest = read_manifest(tmp_path)
    assert manifest.regenerated["max_new_tokens"] == NEW_TOKENS
    assert manifest.regenerated["file"] == str((one_shot / "regenerated.jsonl").resolve())
    assert manifest.num_samples == NUM


def test_ids_are_made_unique_for_resuming():
    convs = [Conversation(i, (("user", "q"), ("assistant", "a"))) for i in ("a", "", "a", "a#1")]
    assert [c.id for c in with_unique_ids(convs)] == ["a", "conv", "a#1", "a#1#1"]
