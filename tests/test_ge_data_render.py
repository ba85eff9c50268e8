"""Loss-mask golden tests (ChatML, Llama-3, Vicuna, Llama-2) and length policies.

The expected mask is never computed with the code under test: the masked tokens are decoded run
by run and compared with the assistant texts plus the format's end-of-turn marker, and the
unmasked tokens must contain every user text, every reply header and no assistant text.
"""

import copy

import helpers
import pytest
import torch
from transformers import AutoTokenizer

from eagle.chat.templates import CHATML_JINJA, JinjaTemplate
from eagle.ge_data.render import (
    RenderStats,
    TemplateNotPrefixStableError,
    render_conversations,
    render_example,
)
from eagle.ge_data.sharegpt import Conversation

USER = ["Name a prime number.", "Why is it prime? Explain in two lines.", "Danke! Auf Deutsch?"]
REPLY = [
    "Seven is a prime number.",
    "It has no divisors\nother than 1 and itself.",
    "Sieben ist eine Primzahl — grüße!",
]
CONVERSATION = Conversation(
    "golden",
    tuple(
        turn for u, a in zip(USER, REPLY, strict=True) for turn in (("user", u), ("assistant", a))
    ),
)


def byte_tokenizer(chat_template=CHATML_JINJA):
    return helpers.byte_tokenizer(chat_template)


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_path):
    return AutoTokenizer.from_pretrained(smollm2_path)


def _decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def masked_runs(tokenizer, example):
    """Decoded text of each maximal run of loss_mask == 1."""
    runs, current = [], []
    for token, bit in zip(example.input_ids.tolist(), example.loss_mask.tolist(), strict=True):
        if bit:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    runs += [current] if current else []
    return [_decode(tokenizer, run) for run in runs]


def unmasked_text(tokenizer, example):
    return _decode(tokenizer, example.input_ids[example.loss_mask == 0].tolist())


def check_golden(tokenizer, example, expected_runs, reply_header):
    assert example.input_ids.dtype == example.loss_mask.dtype == torch.long
    assert example.input_ids.shape == example.loss_mask.shape
    assert masked_runs(tokenizer, example) == expected_runs
    rest = unmasked_text(tokenizer, example)
    assert all(text in rest for text in USER)
    assert not any(word in rest for word in ("Seven", "divisors", "Sieben", "grüße"))
    assert rest.count(reply_header) == len(REPLY)


def test_chatml_mask_with_smollm2_own_template(smollm2_tokenizer):
    example = render_example(smollm2_tokenizer, CONVERSATION, "auto")
    check_golden(
        smollm2_tokenizer,
        example,
        [reply + "<|im_end|>" for reply in REPLY],
        "<|im_start|>assistant\n",
    )
    rendered = smollm2_tokenizer.apply_chat_template(CONVERSATION.messages(), tokenize=False)
    assert _decode(smollm2_tokenizer, example.input_ids.tolist()) == rendered
    assert "You are a helpful AI assistant named SmolLM" in unmasked_text(
        smollm2_tokenizer, example
    )


def test_chatml_mask_keeps_a_system_message_unmasked(smollm2_tokenizer):
    conversation = Conversation("sys", CONVERSATION.turns, system="Answer like a pirate.")
    example = render_example(smollm2_tokenizer, conversation, "chatml")
    check_golden(
        smollm2_tokenizer,
        example,
        [reply + "<|im_end|>" for reply in REPLY],
        "<|im_start|>assistant\n",
    )
    assert unmasked_text(smollm2_tokenizer, example).startswith(
        "<|im_start|>system\nAnswer like a pirate.<|im_end|>"
    )


def test_last_reply_only_masks_the_last_reply_and_nothing_else_changes():
    tokenizer = byte_tokenizer()
    full = render_example(tokenizer, CONVERSATION, "chatml")
    last = render_example(tokenizer, CONVERSATION, "chatml", last_reply_only=True)
    assert torch.equal(last.input_ids, full.input_ids)
    assert masked_runs(tokenizer, last) == [REPLY[-1] + "<|im_end|>"]
    assert (last.loss_mask <= full.loss_mask).all()


def test_llama3_mask(smollm2_tokenizer):
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.add_special_tokens(
        {
            "bos_token": "<|begin_of_text|>",
            "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        }
    )
    example = render_example(tokenizer, CONVERSATION, "llama-3")
    header = "<|start_header_id|>assistant<|end_header_id|>\n\n"
    check_golden(tokenizer, example, [reply + "<|eot_id|>" for reply in REPLY], header)
    assert unmasked_text(tokenizer, example).startswith("<|begin_of_text|><|start_header_id|>user")


def test_vicuna_mask(smollm2_tokenizer):
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.add_special_tokens({"eos_token": "</s>"})
    example = render_example(tokenizer, CONVERSATION, "vicuna_v1.1")
    # The space after "ASSISTANT:" is part of the reply's first byte-level token ("Ġ...").
    check_golden(tokenizer, example, [f" {reply}</s>" for reply in REPLY], "ASSISTANT:")
    assert unmasked_text(tokenizer, example).startswith("A chat between a curious user")


def test_only_the_first_special_token_after_a_reply_is_masked(smollm2_tokenizer):
    tokenizer = copy.deepcopy(smollm2_tokenizer)
    tokenizer.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    example = render_example(tokenizer, CONVERSATION, "llama-2")
    # FastChat's Llama-2 template closes a reply with " </s><s>"; "<s>" opens the next turn.
    check_golden(tokenizer, example, [f" {reply} </s>" for reply in REPLY], "[/INST]")
    assert unmasked_text(tokenizer, example).count("<s>[INST]") == len(REPLY) - 1


def test_byte_tokenizer_chatml_mask_without_any_wheel():
    tokenizer = byte_tokenizer()
    example = render_example(tokenizer, CONVERSATION, "auto")
    check_golden(
        tokenizer, example, [reply + "<|im_end|>" for reply in REPLY], "<|im_start|>assistant\n"
    )


def test_truncate_policy_keeps_a_prefix():
    tokenizer = byte_tokenizer()
    full = render_example(tokenizer, CONVERSATION)
    cut = len(full.input_ids) - 20
    example = render_example(tokenizer, CONVERSATION, max_len=cut, policy="truncate")
    assert example.truncated and not full.truncated
    assert torch.equal(example.input_ids, full.input_ids[:cut])
    assert torch.equal(example.loss_mask, full.loss_mask[:cut])
    same = render_example(tokenizer, CONVERSATION, max_len=len(full.input_ids), policy="drop")
    assert not same.truncated and torch.equal(same.input_ids, full.input_ids)


def test_drop_policy_and_examples_without_loss_tokens():
    tokenizer = byte_tokenizer()
    full = render_example(tokenizer, CONVERSATION)
    assert (
        render_example(tokenizer, CONVERSATION, max_len=len(full.input_ids) - 1, policy="drop")
        is None
    )
    first_masked = int(full.loss_mask.nonzero()[0])
    assert render_example(tokenizer, CONVERSATION, max_len=first_masked) is None
    assert render_example(tokenizer, CONVERSATION, max_len=first_masked + 1).num_loss_tokens == 1


def test_render_conversations_counts_skips():
    tokenizer = byte_tokenizer()
    short = Conversation("short", (("user", "Hi"), ("assistant", "Hello")))
    limit = len(render_example(tokenizer, short).input_ids)
    stats = RenderStats()
    examples = list(
        render_conversations(
            tokenizer, [short, CONVERSATION, short], "chatml", limit, "drop", stats
        )
    )
    assert [e.id for e in examples] == ["short", "short"]
    assert stats.kept == 2 and stats.skipped["too_long"] == 1
    assert stats.tokens == 2 * limit
    assert stats.loss_tokens == sum(e.num_loss_tokens for e in examples)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"policy": "cut"}, "policy must be one of truncate, drop"), ({"max_len": 0}, "max_len")],
)
def test_bad_length_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        render_example(byte_tokenizer(), CONVERSATION, **kwargs)


def test_template_that_is_not_prefix_stable_is_refused():
    tokenizer = byte_tokenizer()
    # Marks the last message, so a prefix renders its final message differently.
    source = (
        "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['content'] }}|{% endfor %}"
    )
    template = JinjaTemplate("last-marker", tokenizer, source)
    with pytest.raises(TemplateNotPrefixStableError, match="'last-marker' is not prefix-stable"):
        render_example(tokenizer, CONVERSATION, template)


def test_slow_tokenizer_is_refused():
    class SlowTokenizer:
        is_fast = False
        chat_template = CHATML_JINJA

    with pytest.raises(TypeError, match="fast"):
        render_example(SlowTokenizer(), CONVERSATION, JinjaTemplate("x", byte_tokenizer()))
