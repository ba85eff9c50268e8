"""Chat templates: one small interface over every way this library renders a conversation.

Owns: the `ChatTemplate` protocol, its two implementations (`JinjaTemplate`, `FastChatTemplate`),
the built-in Jinja sources, and the name registry (`resolve_template`, `template_names`).

Design choices:
- A template only turns `[{"role", "content"}]` into text, with or without the generation
  prompt. The loss mask (`render.py`) is derived from such renderings alone, so a new format is a
  new template here, never string offsets anywhere else.
- "auto" is the target tokenizer's own `chat_template`, the right choice whenever it exists; a
  tokenizer without one makes "auto" fail with a message asking for `--template NAME`.
- Built-in Jinja sources ("chatml", "llama-3") cover models whose tokenizer has no template and
  formats that fschat 0.2.36 lacks; they win over FastChat names of the same spelling.
- Any other name is a FastChat conversation template (e.g. "vicuna_v1.1"), rendered with
  `Conversation.get_prompt()`.
- BOS: Jinja templates write it themselves when the format has one (transformers' convention), so
  their text is tokenized with `add_special_tokens=False`; FastChat prompts carry no BOS, so the
  tokenizer adds its own special tokens, as FastChat-based inference does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fastchat.conversation import conv_templates, get_conv_template

AUTO = "auto"

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


def builtin_jinja_templates() -> dict[str, str]:
    """The Jinja sources this library ships, by name."""
    return {"chatml": CHATML_JINJA, "llama-3": LLAMA3_JINJA}


class ChatTemplate(Protocol):
    """Renders a chat (`[{"role": "system"|"user"|"assistant", "content": str}]`) to text."""

    name: str
    add_special_tokens: bool  # whether tokenizing the rendered text should add BOS/EOS

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
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

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
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

    def render(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool) -> str:
        conv = get_conv_template(self.name)
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
    """Every name `resolve_template` accepts: "auto", the built-ins, then FastChat's names."""
    builtins = list(builtin_jinja_templates())
    fastchat = sorted(name for name in conv_templates if name not in builtins)
    return [AUTO, *builtins, *fastchat]


def resolve_template(name: str, tokenizer: Any) -> ChatTemplate:
    """The chat template called `name` for `tokenizer`.

    Args:
        name: "auto" (the tokenizer's own template), a built-in Jinja name ("chatml",
            "llama-3") or a FastChat template name (e.g. "vicuna_v1.1"); see `template_names()`.
        tokenizer: the target model's tokenizer (renders Jinja templates, supplies `bos_token`).
    Raises:
        ValueError: "auto" with a tokenizer that has no chat template, or an unknown name.
    """
    builtins = builtin_jinja_templates()
    if name == AUTO:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "template='auto' needs a tokenizer with a chat_template, and this one has none; "
                f"pass --template NAME with one of: {', '.join(template_names()[1:])}"
            )
        return JinjaTemplate(name=AUTO, tokenizer=tokenizer)
    if name in builtins:
        return JinjaTemplate(name=name, tokenizer=tokenizer, source=builtins[name])
    if name in conv_templates:
        return FastChatTemplate(name=name)
    raise ValueError(
        f"unknown chat template {name!r}; template must be one of: {', '.join(template_names())} "
        "(the FastChat names come from fastchat.conversation.conv_templates)"
    )
