"""The original EAGLE's command lines and loading keywords (issue 16, items 4-6).

Each name below is one the original (SafeAILab/EAGLE) uses; the module or function that accepts
it cites the file and commit it was read from. Every one is accepted with the same meaning,
accepted with a warning where it cannot apply, or refused with a message saying what to use.
"""

from __future__ import annotations

import importlib
import inspect
import json
from pathlib import Path

import pytest
import torch
from helpers import byte_tokenizer
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

from eagle.application import webui
from eagle.chat.templates import CHATML_JINJA
from eagle.evaluation import gen_answer
from eagle.evaluation.answers import read_answers
from eagle.model import target as target_module
from eagle.model.checkpoint import save_head
from eagle.model.draft_head import HeadConfig, TargetParts, build_head
from eagle.model.ea_model import EaModel
from eagle.model.loading import ignored_placement_flags, model_spec, parse_tree_choices
from eagle.model.target import translate_legacy_kwargs

# The original's evaluation script names (eagle/evaluation/ of SafeAILab/EAGLE).
ORIGINAL_SCRIPTS = [
    f"gen_{kind}_answer_{model}"
    for kind, models in (
        ("ea", ("vicuna", "llama2chat", "llama3chat", "mix", "qwen3", "ds")),
        ("baseline", ("vicuna", "llama2chat", "llama3chat", "mix")),
    )
    for model in models
]
PLACEMENT = ["--num-gpus-per-model", "1", "--num-gpus-total", "2", "--max-gpu-memory", "20GiB"]


def _spec(*argv: str):
    parser = gen_answer.build_parser()
    args = parser.parse_args(list(argv))
    return args, model_spec(args)


@pytest.mark.parametrize("name", ORIGINAL_SCRIPTS)
def test_every_original_script_name_runs_the_one_command(name: str) -> None:
    module = importlib.import_module(f"eagle.evaluation.{name}")
    assert callable(module.main)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0


@pytest.mark.parametrize("spelling", ["--use_eagle3", "--use-eagle3"])
def test_use_eagle3_in_both_spellings_requires_an_eagle3_head(spelling: str) -> None:
    args, _ = _spec(spelling)
    assert args.use_eagle3 is True


def test_placement_flags_are_accepted_and_reported_as_ignored() -> None:
    args, _ = _spec(*PLACEMENT, "--load-in-8bit")
    warnings = ignored_placement_flags(args)
    flags = [w.split(" ", 1)[0] for w in warnings]
    assert flags == [
        "--num-gpus-per-model",
        "--num-gpus-total",
        "--max-gpu-memory",
        "--load-in-8bit",
    ]
    assert all("ignored" in w for w in warnings)
    assert ignored_placement_flags(_spec()[0]) == []


def test_tree_choices_names_and_literal_lists_give_a_static_tree() -> None:
    _, spec = _spec("--tree-choices", "mc_sim_7b_63")  # the original's default name
    assert spec.tree_choices is not None and len(spec.tree_choices) == 25
    _, spec = _spec("--tree-choices", "[[0], [1], [0, 0]]")
    assert spec.tree_choices == ((0,), (1,), (0, 0))
    assert _spec()[1].tree_choices is None  # absent: the dynamic tree, as in EAGLE-2/3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[0, 0]]", "--tree-choices: .*prefix-closed"),
        ("nope", "--tree-choices: unknown tree preset 'nope'"),
        ("[[0], 'x']", "--tree-choices must be a list of lists of ints"),
        ("[[0], __import__('os')]", "--tree-choices is not a list of rank paths"),
    ],
)
def test_bad_tree_choices_name_the_flag(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tree_choices(text)


def test_tree_choices_with_dynamic_tree_sizes_is_an_error() -> None:
    parser = gen_answer.build_parser()
    args = parser.parse_args(["--tree-choices", "chain_3", "--depth", "4"])
    with pytest.raises(ValueError, match="--tree-choices gives a static tree; --depth"):
        model_spec(args)


# -- from_pretrained(load_in_4bit=..., load_in_8bit=...) and the original positional order ------


def test_load_in_false_is_dropped_and_torch_dtype_renamed() -> None:
    kwargs = {"load_in_4bit": False, "load_in_8bit": False, "torch_dtype": torch.float16}
    assert translate_legacy_kwargs(kwargs) == {"dtype": torch.float16}


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_load_in_without_bitsandbytes_is_a_clear_error(bits: str, monkeypatch) -> None:
    monkeypatch.setattr(target_module, "bitsandbytes_installed", lambda: False)
    with pytest.raises(ImportError, match=f"load_in_{bits}=True .* pip install bitsandbytes"):
        translate_legacy_kwargs({f"load_in_{bits}": True})
    with pytest.raises(ImportError, match="bitsandbytes"):  # before anything is loaded
        EaModel.from_pretrained("/nonexistent/target", "/nonexistent/head", load_in_4bit=True)


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_load_in_becomes_a_bitsandbytes_config(bits: str, monkeypatch) -> None:
    monkeypatch.setattr(target_module, "bitsandbytes_installed", lambda: True)
    kwargs = translate_legacy_kwargs({f"load_in_{bits}": True, "device_map": "auto"})
    config = kwargs.pop("quantization_config")
    assert isinstance(config, BitsAndBytesConfig)
    assert (config.load_in_4bit, config.load_in_8bit) == (bits == "4bit", bits == "8bit")
    assert kwargs == {"device_map": "auto"}
    with pytest.raises(ValueError, match="exclusive"):
        translate_legacy_kwargs({"load_in_4bit": True, "load_in_8bit": True})
    with pytest.raises(ValueError, match="exclusive"):
        translate_legacy_kwargs({"load_in_4bit": True, "quantization_config": config})


def test_original_positional_order_is_refused_with_the_keyword_form() -> None:
    with pytest.raises(ValueError, match="the original EAGLE's was use_eagle3"):
        EaModel.from_pretrained(True, "/nonexistent/target", "/nonexistent/head")


# -- the web UI ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_type", "template"),
    [("vicuna", "vicuna_v1.1"), ("llama-3-instruct", "auto"), ("llama-2-chat", "auto")],
)
def test_webui_model_type_picks_the_template(model_type: str, template: str, monkeypatch) -> None:
    monkeypatch.setattr("eagle.application.webui.check_template_flag", lambda parser, name: None)
    args, _ = webui.parse_args(["--model-type", model_type])
    assert args.template == template


def test_webui_model_type_and_another_template_is_an_error(capsys) -> None:
    with pytest.raises(SystemExit):
        webui.parse_args(["--model-type", "vicuna", "--template", "chatml"])
    assert "--model-type vicuna and --template chatml: give one" in capsys.readouterr().err


@pytest.mark.parametrize("bits", ["4", "8"])
def test_webui_load_in_flags(bits: str, monkeypatch, capsys) -> None:
    monkeypatch.setattr(target_module, "bitsandbytes_installed", lambda: False)
    with pytest.raises(SystemExit):
        webui.parse_args([f"--load-in-{bits}bit"])
    assert f"--load-in-{bits}bit needs bitsandbytes" in capsys.readouterr().err
    monkeypatch.setattr(target_module, "bitsandbytes_installed", lambda: True)
    _, spec = webui.parse_args([f"--load-in-{bits}bit"])
    assert spec.quantization == f"{bits}bit" and spec.load_kwargs[f"load_in_{bits}bit"] is True


# -- the original README's headline command, pointed at tiny local models ------------------------

EOS = 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A 4-layer random Llama with the byte tokenizer, an EAGLE-3 and an EAGLE-1 head."""
    root = tmp_path_factory.mktemp("compat")
    tokenizer = byte_tokenizer(chat_template=CHATML_JINJA)  # the scripts' default: auto
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        bos_token_id=1, eos_token_id=EOS, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(root / "target")
    tokenizer.save_pretrained(root / "target")
    parts = TargetParts(model.get_input_embeddings(), model.get_output_embeddings())
    heads = []
    for variant in ("eagle3", "eagle1"):
        config_ = HeadConfig(variant, 32, 64, 4, 2, config.vocab_size)
        heads.append(save_head(build_head(config_, parts, own_embedding=False), root / variant))
    return root / "target", heads[0], heads[1]


def _run(script: str, target: Path, head: Path, tmp_path: Path, *argv: str) -> Path:
    questions = tmp_path / "question.jsonl"
    turns = {"question_id": 1, "category": "writing", "turns": ["Hi there", "And again"]}
    questions.write_text(json.dumps(turns) + "\n")
    answers = tmp_path / f"{script}.jsonl"
    tiny = ["--bench-name", str(questions), "--max-new-token", "8", "--warmup", "0"]
    tiny += ["--device", "cpu", "--dtype", "float32", "--answer-file", str(answers)]
    module = importlib.import_module(f"eagle.evaluation.{script}")
    module.main(["--ea-model-path", str(head), "--base-model-path", str(target), *argv, *tiny])
    return answers


def test_readme_headline_command_runs(tiny, tmp_path, capsys) -> None:
    target, eagle3, _ = tiny
    path = _run("gen_ea_answer_llama3chat", target, eagle3, tmp_path, "--use_eagle3", *PLACEMENT)
    assert len(read_answers(path)[1].choices[0].turns) == 2
    err = capsys.readouterr().err
    assert "--num-gpus-total is accepted for the original EAGLE's command lines and ignored" in err


def test_the_scripts_keep_the_originals_system_prompt_and_tree_defaults(tiny, tmp_path) -> None:
    target, eagle3, _ = tiny  # a head without tree.json: the script's own tree applies
    settings = read_answers(_run("gen_ea_answer_llama3chat", target, eagle3, tmp_path))[1].settings
    assert settings["system_prompt"] == gen_answer.LLAMA_CHAT_SYSTEM_PROMPT
    assert settings["system_prompt"].startswith("You are a helpful, respectful and honest")
    assert settings["tree"] == {"total_token": 60, "depth": 5, "top_k": 10}
    flags = ["--system-prompt", "", "--depth", "3"]
    other = tmp_path / "other"
    other.mkdir()
    settings = read_answers(_run("gen_ea_answer_llama3chat", target, eagle3, other, *flags))[1]
    assert settings.settings["system_prompt"] is None
    assert settings.settings["tree"] == {"total_token": 60, "depth": 3, "top_k": 10}
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    settings = read_answers(_run("gen_ea_answer_qwen3", target, eagle3, qwen))[1].settings
    assert settings["tree"] == {"total_token": 32, "depth": 8, "top_k": 4}
    assert settings["system_prompt"] is None
    assert set(gen_answer.SCRIPTS) >= set(ORIGINAL_SCRIPTS)


def test_the_system_prompt_opens_every_conversation() -> None:
    from eagle.benchmarks import Question
    from eagle.evaluation.methods import Generation
    from eagle.evaluation.runner import RunConfig, answer_choice
    from eagle.model.generate import GenerationConfig

    seen = []

    class Chat:
        def prompt_ids(self, messages):
            seen.append([m["role"] for m in messages])
            return [1, 2]

        def answer_text(self, tokens):
            return "ok"

    class Method:
        device = torch.device("cpu")

        def generate(self, prompt, config):
            return Generation([3], 1)

    question = Question(question_id=1, category="c", turns=("a", "b"))
    run = RunConfig(GenerationConfig(max_new_tokens=2), system_prompt="be brief")
    answer_choice(question, Method(), Chat(), run, 0)
    assert seen == [["system", "user"], ["system", "user", "assistant", "user"]]


def test_eagle1_static_tree_command_is_lossless(tiny, tmp_path) -> None:
    target, _, eagle1 = tiny
    tree = "[[0], [1], [0, 0], [0, 1], [0, 0, 0]]"
    flags = ["--tree-choices", tree, "--template", "auto"]
    ea = _run("gen_ea_answer_vicuna", target, eagle1, tmp_path, *flags)
    base = _run("gen_baseline_answer_vicuna", target, eagle1, tmp_path, "--template", "auto")
    ea_answer, base_answer = read_answers(ea)[1], read_answers(base)[1]
    assert ea_answer.settings["tree"] == {"static_paths": json.loads(tree)}
    assert ea_answer.choices[0].turns == base_answer.choices[0].turns  # greedy, fp32


def test_the_original_attributes_and_forward(tiny) -> None:
    target, eagle3, eagle1 = tiny
    model = EaModel.from_pretrained(
        base_model_path=str(target), ea_model_path=str(eagle3), torch_dtype=torch.float32
    )
    assert model.config is model.base_model.config and model.use_eagle3 is True
    assert (model.hidden_size, model.vocab_size) == (32, model.config.vocab_size)
    assert model.base_model_name_or_path == str(target)
    ids = torch.tensor([[5, 9, 11, 4]])
    _, logits, hidden = model(ids, output_orig=True)
    assert hidden.shape == (1, 4, 32) and logits.shape == (1, 4, model.vocab_size)
    assert torch.allclose(logits, model.base_model(ids).logits, atol=1e-5)
    assert len(model(ids)) == 2
    assert EaModel.from_pretrained(str(target), str(eagle1)).use_eagle3 is False


# -- the table: every public name, argument and flag of the original, and how it is taken -------
# Sources (SafeAILab/EAGLE): eagle/model/ea_model.py (from_pretrained, eagenerate & co.),
# eagle/application/webui.py @1fd3021, eagle/evaluation/gen_ea_answer_llama3chat.py @12c417d,
# gen_ea_answer_vicuna.py @f2f2366, gen_ea_answer_qwen3.py @3e056a4, eagle/train/main.py @13f30d3.
# "same": accepted with the same meaning; "ignored": accepted and reported as doing nothing.
MODEL_API = {
    "from_pretrained": ["base_model_path", "ea_model_path", "use_eagle3", "total_token", "depth",
                        "top_k", "threshold", "torch_dtype", "low_cpu_mem_usage", "device_map",
                        "load_in_4bit", "load_in_8bit"],
    "eagenerate": ["input_ids", "temperature", "top_p", "top_k", "max_new_tokens", "max_length",
                   "log", "is_llama3"],
    "naivegenerate": ["input_ids", "temperature", "top_p", "top_k", "max_new_tokens",
                      "max_length", "log", "is_llama3"],
    "ea_generate": ["input_ids", "temperature", "top_p", "top_k", "max_new_tokens", "max_length",
                    "log", "is_llama3"],
    "naive_generate": ["input_ids", "temperature", "top_p", "top_k", "max_new_tokens",
                       "max_length", "log", "is_llama3"],
}  # fmt: skip
MODEL_ATTRIBUTES = ["base_model", "ea_layer", "tokenizer", "get_tokenizer", "config", "hidden_size",
                    "vocab_size", "base_model_name_or_path", "use_eagle3", "forward"]  # fmt: skip
EVALUATION_FLAGS = {  # flag -> (value or None for a switch, "same" | "ignored")
    "--ea-model-path": ("H", "same"), "--base-model-path": ("M", "same"),
    "--load-in-8bit": (None, "ignored"), "--model-id": ("run", "same"),
    "--bench-name": ("mt_bench", "same"), "--question-begin": ("0", "same"),
    "--question-end": ("2", "same"), "--answer-file": ("a.jsonl", "same"),
    "--max-new-token": ("8", "same"), "--total-token": ("60", "same"), "--depth": ("5", "same"),
    "--top-k": ("10", "same"), "--num-choices": ("1", "same"),
    "--num-gpus-per-model": ("1", "ignored"), "--num-gpus-total": ("1", "ignored"),
    "--max-gpu-memory": ("20GiB", "ignored"), "--temperature": ("0.5", "same"),
    "--use_eagle3": (None, "same"), "--use-eagle3": (None, "same"),
}  # fmt: skip
WEBUI_FLAGS = {"--ea-model-path": "H", "--base-model-path": "M", "--no-eagle3": None,
               "--model-type": "vicuna", "--total-token": "60", "--max-new-token": "512"}  # fmt: skip
TRAIN_FLAGS = {"--basepath": "M", "--configpath": "c.json", "--lr": "3e-5", "--bs": "4",
               "--gradient-accumulation-steps": "1", "--tmpdir": "d", "--cpdir": "o"}  # fmt: skip


@pytest.mark.parametrize("method", sorted(MODEL_API))
def test_table_every_original_keyword_is_taken(method: str) -> None:
    signature = inspect.signature(getattr(EaModel, method))
    takes_rest = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    for name in MODEL_API[method]:
        # named here, or passed on through **kwargs (from_pretrained's go to the target's loader,
        # translated by translate_legacy_kwargs; the generate methods forward to generate_steps)
        assert name in signature.parameters or takes_rest, f"{method}({name}=...)"
    if method != "from_pretrained":  # what a generate method does not name, it forwards
        forwarded = inspect.signature(EaModel.generate_steps).parameters
        for name in MODEL_API[method]:
            assert name in signature.parameters or name in forwarded or name in ("is_llama3", "log")


def test_table_every_original_attribute_exists(tiny) -> None:
    target, eagle3, _ = tiny
    model = EaModel.from_pretrained(
        base_model_path=str(target), ea_model_path=str(eagle3), torch_dtype=torch.float32,
        low_cpu_mem_usage=True, load_in_4bit=False, load_in_8bit=False, threshold=1.0,
    )  # fmt: skip
    for name in MODEL_ATTRIBUTES:
        assert getattr(model, name) is not None, name


@pytest.mark.parametrize("flag", sorted(EVALUATION_FLAGS))
def test_table_every_original_evaluation_flag(flag: str) -> None:
    value, meaning = EVALUATION_FLAGS[flag]
    args = gen_answer.build_parser().parse_args([flag] if value is None else [flag, value])
    ignored = " ".join(ignored_placement_flags(args))
    assert (flag in ignored) == (meaning == "ignored")
    if meaning == "same" and value is not None:
        dest = flag.lstrip("-").replace("-", "_")
        assert str(getattr(args, dest)) == value


@pytest.mark.parametrize("flag", sorted(WEBUI_FLAGS))
def test_table_every_original_webui_flag(flag: str) -> None:
    value = WEBUI_FLAGS[flag]
    webui.build_parser().parse_args([flag] if value is None else [flag, value])


def test_table_every_original_training_flag() -> None:
    from eagle.train import main as train_main

    argv = [item for flag, value in TRAIN_FLAGS.items() for item in (flag, value)]
    args = train_main.parse_args(argv)
    assert (args.base_model_path, args.configpath, args.lr, args.bs) == ("M", "c.json", 3e-5, 4)
    assert (args.tmpdir, args.cpdir, args.gradient_accumulation_steps) == (["d"], "o", 1)
