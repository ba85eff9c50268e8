"""Chat templates: the one registry of template names, and rendering a conversation to a prompt.

Owns: the `ChatTemplate` protocol, its two implementations (`JinjaTemplate`, `FastChatTemplate`),
the built-in Jinja sources, the name registry (`template_names`, `check_template_name`,
`resolve_template`), the `--template` flag every command shares (`add_template_flag`) and
`prompt_ids` (a conversation as the token ids that ask for the next reply). Data generation,
evaluation and the web UI all resolve `--template` here, so a head trained with one name is
evaluated and served under the same name.

Design choices:
- A template only turns `[{"role", "content"}]` into text, with or without the generation
  prompt. The loss mask (`eagle.ge_data.render`) is derived from such renderings alone, so a new
  format is a new template here, never string offsets anywhere else.
- "auto" is the target tokenizer's own `chat_template`, the right choice whenever it exists; a
  tokenizer without one makes "auto" fail with a message asking for `--template NAME`.
- Built-in Jinja sources ("chatml", "llama-3") cover models whose tokenizer has no template and
  formats that fschat 0.2.36 lacks; they win over FastChat names of the same spelling.
- Any other name is a FastChat conversation template (e.g. "vicuna_v1.1"), rendered with
  `Conversation.get_prompt()`. `fschat` is an optional extra (`eagle-llm[fastchat]`), imported
  only when a FastChat name is looked up; without it the registry holds "auto" and the built-ins,
  and a FastChat name fails with an error naming the extra.
- BOS: Jinja templates write it themselves when the format has one (transformers' convention), so
  their text is tokenized with `add_special_tokens=False`; FastChat prompts carry no BOS, so the
  tokenizer adds its own special tokens, as FastChat-based inference does.
- `stop_strings`: text that ends a reply when a model writes it as plain text (FastChat's
  `stop_str`, a built-in's end-of-turn marker); decoded answers are cut there. The tokenizer's
  own template has none: its end of turn is a special token, which decoding drops.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

AUTO = "auto"
FASTCHAT_INSTALL = "pip install 'eagle-llm[fastchat]' (or pip install fschat)"

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": str}

# ChatML (Qwen, SmolLM2, OpenHermes, ...): each message is
# <|im_start|>{role}\n{content}<|im_end|>\n ; the reply is opened by <|im_start|>assistant\n .
CHATML_JINJA = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# Llama-3 instruct: BOS once, then per message
# <|start_header_id|>{role}<|end_header_id|>\n\n{content, stripped}<|eot_id|> .
LLAMA3_JINJA = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{{ message['content'] | trim }}{{ '<|eot_id|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif -%}"
)


@dataclass(frozen=True)
class BuiltinTemplate:
    """A Jinja source this library ships, and the marker that closes each message in it."""

    source: str
    end_of_turn: str


BUILTIN_TEMPLATES = {
    "chatml": BuiltinTemplate(CHATML_JINJA, "<|im_end|>"),
    "llama-3": BuiltinTemplate(LLAMA3_JINJA, "<|eot_id|>"),
}


class ChatTemplate(Protocol):
    """Renders a chat (`[{"role": "system"|"user"|"assistant", "content": str}]`) to text."""

    # read-only members: the templates are frozen dataclasses
    @property
    def name(self) -> str: ...

    @property
    def add_special_tokens(self) -> bool:
        """Whether tokenizing the rendered text should add BOS/EOS."""
        ...

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Plain text that ends a reply; answers are cut there."""
        ...

    def render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        """The chat as the model sees it; with `add_generation_prompt`, followed by the text that
        opens an assistant reply."""
        ...


@dataclass(frozen=True, eq=False)
class JinjaTemplate:
    """A Jinja chat template rendered by the tokenizer (`source=None`: its own template)."""

    name: str
    tokenizer: Any
    source: str | None = None
    add_special_tokens: bool = False
    stop_strings: tuple[str, ...] = ()

    def render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            list(messages),
            chat_template=self.source,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )


@dataclass(frozen=True)
class FastChatTemplate:
    """A FastChat conversation template, looked up by name at each render (they are mutable)."""

    name: str
    add_special_tokens: bool = True

    @property
    def stop_strings(self) -> tuple[str, ...]:
        stop = _fastchat_conversation(self.name).stop_str
        if not stop:
            return ()
        return (stop,) if isinstance(stop, str) else tuple(stop)

    def render(self, messages: Sequence[Message], add_generation_prompt: bool) -> str:
        conv = _fastchat_conversation(self.name)
        user_role, assistant_role = conv.roles[0], conv.roles[1]
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "system":
                conv.set_system_message(content)
            elif role in ("user", "assistant"):
                conv.append_message(user_role if role == "user" else assistant_role, content)
            else:
                raise ValueError(f"message role must be system, user or assistant, got {role!r}")
        if add_generation_prompt:
            conv.append_message(assistant_role, None)
        return conv.get_prompt()


def template_names() -> list[str]:
    """Every name `resolve_template` accepts: "auto", the built-ins, then FastChat's names
    (none without fschat installed)."""
    fastchat = _fastchat_templates() or {}
    return [AUTO, *BUILTIN_TEMPLATES, *sorted(n for n in fastchat if n not in BUILTIN_TEMPLATES)]


def check_template_name(name: str) -> None:
    """Raise ValueError unless `name` is in the registry (`template_names()`).

    Needs no tokenizer, so commands check `--template` before loading a model; whether "auto"
    works depends on the tokenizer and is checked by `resolve_template`.
    """
    if name == AUTO or name in BUILTIN_TEMPLATES:
        return
    fastchat = _fastchat_templates()
    if fastchat is not None and name in fastchat:
        return
    if fastchat is None:
        source = f"FastChat's names, such as vicuna_v1.1, need fschat: {FASTCHAT_INSTALL}"
    else:
        source = "the FastChat names come from fastchat.conversation.conv_templates"
    raise ValueError(
        f"unknown --template {name!r}; choose one of: {', '.join(template_names())} ({source})"
    )


def resolve_template(name: str, tokenizer: Any) -> ChatTemplate:
    """The chat template called `name` for `tokenizer`.

    Args:
        name: "auto" (the tokenizer's own template), a built-in Jinja name ("chatml",
            "llama-3") or a FastChat template name (e.g. "vicuna_v1.1"); see `template_names()`.
        tokenizer: the target model's tokenizer (renders Jinja templates, supplies `bos_token`).
    Raises:
        ValueError: "auto" with a tokenizer that has no chat template, an unknown name, or a
            FastChat name without fschat installed.
    """
    check_template_name(name)
    if name == AUTO:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "the tokenizer has no chat template: pass --template NAME with one of: "
                f"{', '.join(template_names()[1:])}"
                + ("" if _fastchat_templates() is not None else f" (more: {FASTCHAT_INSTALL})")
            )
        return JinjaTemplate(name=AUTO, tokenizer=tokenizer)
    if name in BUILTIN_TEMPLATES:
        builtin = BUILTIN_TEMPLATES[name]
        return JinjaTemplate(name, tokenizer, builtin.source, stop_strings=(builtin.end_of_turn,))
    return FastChatTemplate(name=name)


def prompt_ids(tokenizer: Any, template: ChatTemplate, messages: Sequence[Message]) -> list[int]:
    """Token ids of `messages` rendered with `template`, followed by the generation prompt.

    `messages` end with the user turn to answer; BOS is added as the template's
    `add_special_tokens` says.
    """
    text = template.render(messages, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=template.add_special_tokens)["input_ids"])


def add_template_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str = AUTO
) -> None:
    """Add `--template` to an argparse parser or argument group, the same in every command."""
    parser.add_argument(
        "--template",
        default=default,
        help=f"chat template: '{AUTO}' (the tokenizer's own), a built-in "
        f"({', '.join(BUILTIN_TEMPLATES)}) or a FastChat conversation name such as vicuna_v1.1 "
        f"(needs fschat); default: {default}",
    )


def check_template_flag(parser: argparse.ArgumentParser, name: str) -> None:
    """Exit through `parser` when `--template` is not in the registry."""
    try:
        check_template_name(name)
    except ValueError as error:
        parser.error(str(error))


def _fastchat_templates() -> dict[str, Any] | None:
    """FastChat's conversation templates by name; None when fschat is not installed."""
    try:
        from fastchat.conversation import conv_templates
    except ImportError:
        return None
    return conv_templates


def _fastchat_conversation(name: str) -> Any:
    """A fresh copy of FastChat's conversation template `name` (templates are mutable)."""
    templates = _fastchat_templates()
    if templates is None:
        raise ValueError(f"FastChat template {name!r} needs fschat: {FASTCHAT_INSTALL}")
    if name not in templates:
        raise ValueError(f"unknown FastChat template {name!r}")
    return templates[name].copy()
