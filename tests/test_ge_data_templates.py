"""Chat-template registry: name resolution, errors that list choices, FastChat rendering."""

import pytest
from helpers import byte_tokenizer

from eagle.ge_data.templates import (
    CHATML_JINJA,
    FastChatTemplate,
    JinjaTemplate,
    resolve_template,
    template_names,
)

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
    with pytest.raises(ValueError, match=r"'nope'.*auto, chatml, llama-3.*fastchat"):
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
