"""Answer generation: multi-turn prompts, EOS counting, resumption, and end-to-end smoke runs.

The smoke runs build a tiny random Llama target with a byte-level tokenizer (and, for EAGLE, a
random EAGLE-1 head saved in the published format) in a temporary folder and run the real
command lines on a two-question file, then the speed report on what they wrote.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

from eagle.benchmarks import Question
from eagle.chat.formatter import ChatFormatter
from eagle.evaluation import gen_ea_answer, speed
from eagle.evaluation.answers import read_answers
from eagle.evaluation.methods import EaMethod, Generation
from eagle.evaluation.runner import Job, RunConfig, generate_answers
from eagle.model.checkpoint import save_head
from eagle.model.draft import DynamicTree
from eagle.model.draft_head import HeadConfig, TargetParts, build_head
from eagle.model.generate import GenerationConfig, StepResult

EOS = 2
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["Write a poem.", "Shorter, please."]},
    {"question_id": 2, "category": "math", "turns": ["What is 2 + 2?"]},
]


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A 259-token byte-level tokenizer (<pad>, <s>, </s> = 2, 256 bytes) with a chat template."""
    specials = ["<pad>", "<s>", "</s>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        chat_template=CHAT_TEMPLATE,
    )


class ScriptedMethod:
    """A method that always answers ``reply`` in ``steps`` steps and records its prompts."""

    device = torch.device("cpu")

    def __init__(self, reply: list[int], steps: int = 1) -> None:
        self.reply, self.steps, self.prompts = reply, steps, []

    def generate(self, prompt: list[int], settings: GenerationConfig) -> Generation:
        self.prompts.append(prompt)
        return Generation(list(self.reply), self.steps)


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return byte_tokenizer()


def _questions() -> list[Question]:
    return [Question(q["question_id"], q["category"], tuple(q["turns"])) for q in QUESTIONS]


def test_turn_two_sees_turn_one_answer_and_files_record_every_turn(tokenizer, tmp_path) -> None:
    reply = [*tokenizer("Roses.")["input_ids"], EOS]
    method = ScriptedMethod(reply, steps=2)
    path = tmp_path / "a.jsonl"
    run = RunConfig(GenerationConfig(max_new_tokens=8), warmup=0)
    generate_answers(_questions(), {"m": Job(method, "model", path)}, ChatFormatter(tokenizer), run)
    assert tokenizer.decode(method.prompts[1]).endswith(
        "<assistant>Roses.</s><user>Shorter, please.</s><assistant>"
    )
    choice = read_answers(path)[1].choices[0]
    assert choice.turns == ["Roses.", "Roses."]
    assert choice.new_tokens == [7, 7] and choice.idxs == [2, 2]
    assert all(t >= 0 for t in choice.wall_time)


def test_max_turns_asks_only_the_first_turns(tokenizer, tmp_path) -> None:
    method = ScriptedMethod([*tokenizer("Roses.")["input_ids"], EOS], steps=2)
    path = tmp_path / "a.jsonl"
    run = RunConfig(GenerationConfig(max_new_tokens=8), warmup=0, max_turns=1)
    generate_answers(_questions(), {"m": Job(method, "model", path)}, ChatFormatter(tokenizer), run)
    assert len(method.prompts) == len(_questions())
    assert all(len(a.choices[0].turns) == 1 for a in read_answers(path).values())


def test_resumption_completes_without_repeating(tokenizer, tmp_path) -> None:
    method = ScriptedMethod([EOS])
    path = tmp_path / "answers" / "a.jsonl"
    chat, run = ChatFormatter(tokenizer), RunConfig(GenerationConfig(), warmup=1)
    jobs = {"m": Job(method, "model", path)}
    assert generate_answers(_questions()[:1], jobs, chat, run) == 1
    assert len(method.prompts) == 1 + 2  # warm-up + the two turns of question 1
    assert generate_answers(_questions(), jobs, chat, run) == 1
    assert len(method.prompts) == 3 + 1 + 1  # warm-up + question 2 only
    assert [json.loads(line)["question_id"] for line in path.read_text().splitlines()] == [1, 2]
    assert generate_answers(_questions(), jobs, chat, run) == 0
    assert len(method.prompts) == 5  # nothing left: not even a warm-up


def test_lines_record_the_job_settings_and_resume_only_with_them(tokenizer, tmp_path) -> None:
    method, path = ScriptedMethod([EOS]), tmp_path / "a.jsonl"
    chat, run = ChatFormatter(tokenizer), RunConfig(GenerationConfig(), warmup=0)
    greedy = {"temperature": 0.0, "method": "m"}
    generate_answers(_questions()[:1], {"m": Job(method, "model", path, greedy)}, chat, run)
    assert read_answers(path)[1].settings == greedy
    sampled = {"m": Job(method, "model", path, {**greedy, "temperature": 1.0})}
    with pytest.raises(ValueError, match=r"generated with temperature=0\.0; this run has"):
        generate_answers(_questions(), sampled, chat, run)
    assert len(method.prompts) == 2  # refused before anything was generated


def _fake_ea_model(continuations: dict[bool, tuple[list[int], int]]) -> SimpleNamespace:
    """An EaModel stand-in whose decode loop ends with ``tokens`` after ``steps`` target steps
    (keyed by use_draft)."""

    def generate_steps(input_ids: torch.Tensor, use_draft: bool, **_):
        tokens, steps = continuations[use_draft]
        ids = torch.cat([input_ids, torch.tensor([tokens])], dim=1)
        yield StepResult(ids, len(tokens), steps, 0, True)

    return SimpleNamespace(
        generate_steps=generate_steps,
        target=SimpleNamespace(device=torch.device("cpu")),
        tree=DynamicTree(total_token=4, depth=2, top_k=4),
    )


def test_eagle_and_baseline_count_tokens_identically_up_to_eos() -> None:
    model = _fake_ea_model({True: ([7, 8, EOS, 9, 9], 2), False: ([7, 8, EOS], 3)})
    eagle = EaMethod(model, "eagle", frozenset({EOS})).generate([5, 6], GenerationConfig())
    baseline = EaMethod(model, "baseline", frozenset({EOS})).generate([5, 6], GenerationConfig())
    assert eagle == Generation([7, 8, EOS], 2)  # post-EOS tokens neither kept nor counted
    assert baseline == Generation([7, 8, EOS], 3)


# -- end-to-end smoke runs on a tiny random model -------------------------------------------


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory) -> Path:
    """A 2-layer random Llama (hidden 32) and the byte tokenizer, saved together."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_head(tiny_target: Path, tmp_path_factory) -> Path:
    """A random EAGLE-1 head for the tiny target, saved with the library's own writer."""
    target = AutoModelForCausalLM.from_pretrained(tiny_target)
    config = HeadConfig("eagle1", 32, 64, 4, 2, target.config.vocab_size)
    parts = TargetParts(target.get_input_embeddings(), target.get_output_embeddings())
    torch.manual_seed(1)
    head = build_head(config, parts, own_embedding=False)
    return save_head(head, tmp_path_factory.mktemp("tiny-head"))


@pytest.fixture
def question_file(tmp_path: Path) -> Path:
    path = tmp_path / "question.jsonl"
    path.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    return path


def _generate(target: Path, questions: Path, out: Path, *argv: str) -> None:
    common = ["--base-model-path", str(target), "--bench-name", str(questions), "--device", "cpu"]
    common += ["--dtype", "float32"]  # greedy agreement with plain decoding is exact in fp32
    options = ["--max-new-token", "12", "--warmup", "1", "--answer-file", str(out)]
    gen_ea_answer.main([*common, *options, *argv])


def _speed(folder: Path, ea: str, baseline: str, questions: Path, *extra: str):
    return speed.main(
        [
            *("--ea-answers", str(folder / f"{ea}.jsonl")),
            *("--baseline-answers", str(folder / f"{baseline}.jsonl")),
            *("--bench-name", str(questions), *extra),
        ]
    )


def test_smoke_transformers_reference_methods(tiny_target, question_file, tmp_path) -> None:
    methods = ["--method", "hf_generate", "--method", "hf_prompt_lookup"]
    _generate(tiny_target, question_file, tmp_path / "{method}.jsonl", *methods)
    answers = read_answers(tmp_path / "hf_generate.jsonl")
    assert sorted(answers) == [1, 2]
    turns = answers[1].choices[0]
    assert len(turns.turns) == 2 and all(1 <= n <= 12 for n in turns.new_tokens)
    assert turns.idxs == turns.new_tokens  # generate() does one target forward per token
    assert "prompt_lookup_tokens" not in answers[1].settings
    lookup = read_answers(tmp_path / "hf_prompt_lookup.jsonl")[1].settings
    assert (lookup["method"], lookup["prompt_lookup_tokens"]) == ("hf_prompt_lookup", 10)
    report = _speed(tmp_path, "hf_prompt_lookup", "hf_generate", question_file)
    agree = report.agreement["eagle"]
    assert agree.same_text == agree.turns == 3  # greedy prompt lookup is lossless in fp32


def test_smoke_lookup_methods(tiny_target, tiny_head, question_file, tmp_path) -> None:
    argv = ["--ea-model-path", str(tiny_head), "--total-token", "8", "--depth", "3", "--top-k", "4"]
    argv += ["--lookup-max-tokens", "4", "--lookup-min-ngram", "1"]
    methods = ["--method", "lookup", "--method", "eagle_lookup", "--method", "baseline"]
    _generate(tiny_target, question_file, tmp_path / "{method}.jsonl", *argv, *methods)
    extra = f"lookup={tmp_path / 'lookup.jsonl'}"
    report = _speed(tmp_path, "eagle_lookup", "baseline", question_file, "--extra-answers", extra)
    for name in ("eagle", "lookup"):  # greedy in fp32: identical to plain decoding
        agree = report.agreement[name]
        assert agree.same_text == agree.same_tokens == agree.turns == 3
    lookup = read_answers(tmp_path / "lookup.jsonl")[1].settings
    both = read_answers(tmp_path / "eagle_lookup.jsonl")[1].settings
    expected = {"max_tokens": 4, "min_ngram": 1, "max_ngram": 4, "matches": 1}
    assert lookup["lookup"] == both["lookup"] == expected
    assert "tree" not in lookup and both["tree"] == {"total_token": 8, "depth": 3, "top_k": 4}


def test_smoke_eagle_and_baseline(tiny_target, tiny_head, question_file, tmp_path) -> None:
    argv = ["--ea-model-path", str(tiny_head), "--total-token", "8", "--depth", "3", "--top-k", "4"]
    methods = ["--method", "eagle", "--method", "baseline", "--method", "hf_generate"]
    out = tmp_path / "{method}.jsonl"
    _generate(tiny_target, question_file, out, *argv, *methods)
    eagle = read_answers(tmp_path / "eagle.jsonl")
    assert sorted(eagle) == [1, 2]
    assert all(n <= 12 for a in eagle.values() for n in a.choices[0].new_tokens)
    extra = f"hf_generate={tmp_path / 'hf_generate.jsonl'}"
    report = _speed(tmp_path, "eagle", "baseline", question_file, "--extra-answers", extra)
    assert report.overall["baseline"].tau == 1.0
    assert report.overall["eagle"].tau >= 1.0
    for name in ("eagle", "hf_generate"):  # greedy in fp32: identical to plain decoding
        agree = report.agreement[name]
        assert agree.same_text == agree.same_tokens == agree.turns == 3
    settings = eagle[1].settings
    assert settings["method"] == "eagle" and settings["ea_model_path"] == str(tiny_head)
    assert settings["tree"] == {"total_token": 8, "depth": 3, "top_k": 4}
    assert (settings["max_new_token"], settings["temperature"], settings["dtype"]) == (
        12,
        0.0,
        "float32",
    )
    assert settings["device"] == "cpu" and settings["threads"] == torch.get_num_threads()
    baseline = read_answers(tmp_path / "baseline.jsonl")[1].settings
    assert baseline == {k: v for k, v in settings.items() if k not in ("ea_model_path", "tree")} | {
        "method": "baseline"
    }
    lines = (tmp_path / "eagle.jsonl").read_text()
    _generate(tiny_target, question_file, out, *argv, *methods)  # complete: nothing is redone
    assert (tmp_path / "eagle.jsonl").read_text() == lines
    with pytest.raises(SystemExit):  # other flags: refused before the models load
        _generate(tiny_target, question_file, out, *argv, *methods, "--max-new-token", "10")
    assert (tmp_path / "eagle.jsonl").read_text() == lines
