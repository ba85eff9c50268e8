"""ChatFormatter: prompts from a conversation under any registered template, answers cut at the
template's stop strings, errors that name --template; and common_prefix."""

import pytest
from helpers import byte_tokenizer

from eagle.chat.formatter import ChatFormatter, common_prefix
from eagle.chat.templates import CHATML_JINJA

CONVERSATION = [
    {"role": "user", "content": "Write a poem."},
    {"role": "assistant", "content": "Roses."},
    {"role": "user", "content": "Shorter."},
]


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer(CHATML_JINJA)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_tokenizer_template_carries_the_conversation(tokenizer) -> None:
    for chat in (ChatFormatter(tokenizer), ChatFormatter(tokenizer, None)):  # None: "auto"
        assert tokenizer.decode(chat.prompt_ids(CONVERSATION)) == (
            "<|im_start|>user\nWrite a poem.<|im_end|>\n<|im_start|>assistant\nRoses.<|im_end|>\n"
            "<|im_start|>user\nShorter.<|im_end|>\n<|im_start|>assistant\n"
        )


def test_fastchat_template_and_stop_string(tokenizer) -> None:
    pytest.importorskip("fastchat")
    vicuna = ChatFormatter(tokenizer, "vicuna_v1.1")
    prompt = tokenizer.decode(vicuna.prompt_ids([{"role": "user", "content": "hi"}]))
    assert prompt.endswith("USER: hi ASSISTANT:")
    one_shot = ChatFormatter(tokenizer, "one_shot")  # stop string "###"
    assert one_shot.answer_text(_ids(tokenizer, " Fine. ### Human: more")) == "Fine."


def test_builtin_template_is_usable_for_a_tokenizer_without_one() -> None:
    bare = byte_tokenizer()
    bare.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    llama3 = ChatFormatter(bare, "llama-3")
    assert bare.decode(llama3.prompt_ids(CONVERSATION[:1])) == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWrite a poem.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert llama3.answer_text(_ids(bare, "Roses.<|eot_id|>more")) == "Roses."


def test_template_errors_name_the_flag(tokenizer) -> None:
    with pytest.raises(ValueError, match=r"unknown --template 'nope'; choose one of: auto, chatml"):
        ChatFormatter(tokenizer, "nope")
    with pytest.raises(ValueError, match="no chat template: pass --template NAME"):
        ChatFormatter(byte_tokenizer())


def test_common_prefix() -> None:
    assert common_prefix("abcd", "abxd") == 2 and common_prefix("ab", "abc") == 2
    assert common_prefix("", "a") == 0 and common_prefix("same", "same") == 4
