"""Chat-template registry: name resolution, errors that list choices, FastChat rendering, the
FastChat extra missing, and the same names accepted by data generation, evaluation and the UI."""

import subprocess
import sys

import pytest
from helpers import byte_tokenizer

from eagle.application import webui
from eagle.chat.formatter import ChatFormatter
from eagle.chat.templates import (
    CHATML_JINJA,
    FastChatTemplate,
    JinjaTemplate,
    check_template_name,
    resolve_template,
    template_names,
)
from eagle.evaluation import gen_answer, gen_ea_answer
from eagle.ge_data import options

CHAT = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]


def test_auto_uses_the_tokenizers_own_template():
    template = resolve_template("auto", byte_tokenizer(CHATML_JINJA))
    assert isinstance(template, JinjaTemplate)
    assert not template.add_special_tokens
    assert template.render(CHAT, add_generation_prompt=True) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
    )


def test_auto_without_a_tokenizer_template_asks_for_one():
    with pytest.raises(ValueError, match=r"--template NAME.*chatml.*vicuna_v1\.1"):
        resolve_template("auto", byte_tokenizer())


def test_unknown_name_lists_the_choices():
    with pytest.raises(
        ValueError, match=r"unknown --template 'nope'; .*auto, chatml, llama-3, .*vicuna_v1\.1"
    ):
        resolve_template("nope", byte_tokenizer())


def test_names_start_with_auto_and_builtins_and_include_fastchat():
    names = template_names()
    assert names[:3] == ["auto", "chatml", "llama-3"]
    assert "vicuna_v1.1" in names
    assert len(names) == len(set(names))


def test_llama3_builtin_writes_bos_headers_and_trims():
    tokenizer = byte_tokenizer()
    tokenizer.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    text = resolve_template("llama-3", tokenizer).render(
        [{"role": "user", "content": " Hi "}], add_generation_prompt=True
    )
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_fastchat_vicuna_renders_system_roles_and_generation_prompt():
    template = resolve_template("vicuna_v1.1", byte_tokenizer(CHATML_JINJA))
    assert template == FastChatTemplate("vicuna_v1.1")
    assert template.add_special_tokens
    messages = [{"role": "system", "content": "Be brief."}, *CHAT]
    assert template.render(messages, add_generation_prompt=True) == (
        "Be brief. USER: Hi ASSISTANT: Hello</s>USER: Bye ASSISTANT:"
    )
    assert template.render(CHAT[:2], add_generation_prompt=False).endswith(
        "USER: Hi ASSISTANT: Hello</s>"
    )


def test_fastchat_rejects_unknown_roles():
    with pytest.raises(ValueError, match="role must be system, user or assistant"):
        FastChatTemplate("vicuna_v1.1").render(
            [{"role": "tool", "content": "x"}], add_generation_prompt=False
        )


def test_builtins_cut_answers_at_their_end_of_turn_marker():
    assert resolve_template("chatml", byte_tokenizer()).stop_strings == ("<|im_end|>",)
    assert resolve_template("llama-3", byte_tokenizer()).stop_strings == ("<|eot_id|>",)
    assert resolve_template("auto", byte_tokenizer(CHATML_JINJA)).stop_strings == ()
    assert FastChatTemplate("one_shot").stop_strings == ("###",)


@pytest.fixture
def without_fastchat(monkeypatch):
    """fschat not installed: importing fastchat.conversation raises ImportError."""
    monkeypatch.setitem(sys.modules, "fastchat", None)
    monkeypatch.setitem(sys.modules, "fastchat.conversation", None)


def test_without_fastchat_the_registry_holds_auto_and_the_builtins(without_fastchat):
    assert template_names() == ["auto", "chatml", "llama-3"]
    check_template_name("llama-3")
    assert resolve_template("chatml", byte_tokenizer()).render(CHAT[:1], False) == (
        "<|im_start|>user\nHi<|im_end|>\n"
    )


def test_without_fastchat_a_fastchat_name_names_the_extra(without_fastchat):
    with pytest.raises(ValueError, match=r"'vicuna_v1\.1'.*eagle-llm\[fastchat\]"):
        resolve_template("vicuna_v1.1", byte_tokenizer())
    with pytest.raises(ValueError, match=r"needs fschat: pip install 'eagle-llm\[fastchat\]'"):
        FastChatTemplate("vicuna_v1.1").render(CHAT, add_generation_prompt=True)
    with pytest.raises(
        ValueError, match=r"chatml, llama-3 \(more: pip install 'eagle-llm\[fastchat\]'"
    ):
        resolve_template("auto", byte_tokenizer())


def test_importing_the_chat_layer_loads_neither_fastchat_nor_transformers():
    modules = ("eagle.chat.templates", "eagle.chat.formatter", "eagle.benchmarks")
    lazy = ("fastchat", "transformers", "torch")
    imports = "".join(f"import {m}\n" for m in modules)
    code = f"import sys\n{imports}print(sorted(m for m in {lazy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (result.returncode, result.stdout.strip(), result.stderr) == (0, "[]", "")


# -- one registry: every command accepts the same names, and refuses the same ones --------------

SAME_NAMES = ["auto", "chatml", "llama-3", "vicuna_v1.1"]
NO_MODEL = ["--base-model-path", "/nonexistent/target"]  # flag errors come before any loading


def _tokenizer():
    tokenizer = byte_tokenizer(CHATML_JINJA)
    tokenizer.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    return tokenizer


@pytest.mark.parametrize("name", SAME_NAMES)
def test_ge_data_accepts_the_name(name, tmp_path):
    parser = options.build_parser()
    args = parser.parse_args(["--outdir", str(tmp_path), "--template", name])
    options.validate(args, parser)
    assert resolve_template(args.template, _tokenizer()).name == name


@pytest.mark.parametrize("name", SAME_NAMES)
def test_evaluation_accepts_the_name(name):
    args = gen_answer.build_parser().parse_args(["--template", name])
    check_template_name(args.template)  # what gen_answer.main checks before loading
    assert ChatFormatter(_tokenizer(), args.template).prompt_ids(CHAT[:1])


@pytest.mark.parametrize("name", SAME_NAMES)
def test_web_ui_accepts_the_name(name):
    parser = webui.build_parser()
    args = parser.parse_args(["--template", name])
    webui.check_ranges(parser, args)
    assert ChatFormatter(_tokenizer(), args.template).prompt_ids(CHAT[:1])  # as build_demo does


def test_every_command_has_the_same_template_flag():
    def template_action(parser):
        return next(a for a in parser._actions if "--template" in a.option_strings)

    parsers = [options.build_parser(), gen_answer.build_parser(), webui.build_parser()]
    assert len({(template_action(p).default, template_action(p).help) for p in parsers}) == 1


def test_every_command_refuses_an_unknown_name_before_loading(tmp_path, capsys):
    parser = options.build_parser()
    args = parser.parse_args(["--outdir", str(tmp_path), "--template", "nope"])
    ui_parser = webui.build_parser()
    ui_args = ui_parser.parse_args(["--template", "nope"])
    commands = [
        lambda: options.validate(args, parser),
        lambda: gen_ea_answer.main([*NO_MODEL, "--method", "hf_generate", "--template", "nope"]),
        lambda: webui.check_ranges(ui_parser, ui_args),
    ]
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            command()
        assert exit_info.value.code == 2
        assert "unknown --template 'nope'" in capsys.readouterr().err
