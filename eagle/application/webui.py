"""A Gradio chat page for EAGLE: streamed answers, live speed figures, drafted tokens marked.

    python -m eagle.application.webui                      # built-in SmolLM2 and its shipped head
    python -m eagle.application.webui --base-model-path M --ea-model-path H --port 8000

``build_demo(model, tokenizer)`` returns the ``gr.Blocks`` for any loaded ``EaModel`` (tests use
a tiny random one); ``main(argv)`` parses the flags, loads the model and serves the page on
``--host``/``--port``, never shared unless ``--share`` is given. The chat logic lives in
``eagle.application.chat``; this module only lays out components and wires events.

Beside the EAGLE switch, "Drafts from the context" adds the context lookup's continuations to
the tree (``eagle.model.lookup``; on at first when the model has a default lookup, e.g. from
``--lookup``); with EAGLE off it drafts alone. Highlighted answers mark text drafted by the head
and text drafted from the context in two colours (``CSS``, light and dark theme), explained by a
legend under the highlight switch.

Conversation state is one list of ``Turn`` per browser session (a ``gr.State``), changed in
place: a new message appends a pending turn (answer ``None``), and the answer event fills the
first pending turn step by step. Regenerate replaces the last turn by a pending copy and Clear
empties the list; an answer whose turn is gone stops. Every input is checked on the server
(``chat.checked_settings``): bad settings take no message and regenerate nothing, and an answer
that fails for any reason removes its turn, so no turn is left pending for a later answer to
land on. Answers run one at a time across sessions (one model); Stop, Clear, Regenerate's
reset and the highlight switch run at once, outside the queue. Gradio is imported only when a
page is built, so importing this module loads nothing.

The original web UI's flags (SafeAILab/EAGLE eagle/application/webui.py @3cbfb39) are accepted:
``--model-type`` picks the template (``MODEL_TYPES``), ``--load-in-8bit``/``--load-in-4bit``
quantise the target with bitsandbytes (``eagle.model.loading.add_quantization_flags``).
"""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from eagle.application.chat import (
    CONTEXT_CLASS,
    HIGHLIGHT_CLASS,
    TEMPERATURE,
    SettingsError,
    StopFlag,
    Turn,
    checked_settings,
    max_new_tokens_limit,
    render_answer,
    stream_answer,
)
from eagle.chat.formatter import ChatFormatter
from eagle.chat.templates import AUTO, add_template_flag, check_template_flag
from eagle.input_checks import POSITIVE_INT, Bound, check_flags
from eagle.model.loading import (
    ModelSpec,
    add_model_flags,
    add_quantization_flags,
    checked_model_spec,
    load_ea_model,
)

if TYPE_CHECKING:
    import gradio as gr

CSS = f"""
mark.{HIGHLIGHT_CLASS} {{ background: #ffd08a; color: inherit; border-radius: 3px; padding: 0; }}
.dark mark.{HIGHLIGHT_CLASS} {{ background: #8a5a00; }}
mark.{CONTEXT_CLASS} {{ background: #a6d8ff; color: inherit; border-radius: 3px; padding: 0; }}
.dark mark.{CONTEXT_CLASS} {{ background: #1f5c8c; }}
#eagle-figures {{ min-height: 1.5em; }}
"""
LEGEND = (
    f'<mark class="{HIGHLIGHT_CLASS}">drafted by the head</mark> and '
    f'<mark class="{CONTEXT_CLASS}">drafted from the context</mark>, accepted by the target; '
    "plain text is the target's own token of each step."
)
GENERATE_QUEUE = "eagle-generate"  # one model: answers run one at a time across sessions
# The original's --model-type (its choices, default llama-3-instruct) as a --template name. It
# built vicuna and llama-2-chat prompts with FastChat, mixtral as llama-2 without a system
# prompt, and llama-3-instruct with the tokenizer's template; the Llama, Mixtral and Llama-3
# chat tokenizers carry that format as their own template, Vicuna's has none. (It also set the
# Llama-2 system prompt for llama-2-chat and llama-3-instruct; that is not reproduced here.)
MODEL_TYPES = {
    "vicuna": "vicuna_v1.1",  # FastChat's name for what get_conversation_template("vicuna") gives
    "llama-2-chat": AUTO,
    "mixtral": AUTO,
    "llama-3-instruct": AUTO,
}
FLAG_BOUNDS = {
    "--max-new-token": POSITIVE_INT,
    "--port": Bound(1, 65535, integer=True),
}


def chat_messages(turns: list[Turn], highlight: bool) -> list[dict[str, str]]:
    """The Chatbot's value: user and assistant messages, highlighted answers as HTML."""
    messages = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.user})
        if turn.segments:
            content = render_answer(turn.segments, highlight)
            messages.append({"role": "assistant", "content": content})
        elif turn.answer:
            messages.append({"role": "assistant", "content": turn.answer})
    return messages


def build_demo(
    model,
    tokenizer=None,
    template: str | None = AUTO,
    max_new_tokens: int = 512,
    max_length: int | None = None,
    title: str = "EAGLE chat",
) -> gr.Blocks:
    """The chat page for a loaded ``EaModel`` (``tokenizer`` defaults to the model's).

    ``template`` is a name from the chat-template registry (``eagle.chat.templates``): "auto"
    (the tokenizer's own), a built-in or a FastChat name. ``max_length`` caps prompt + answer
    positions (default: the target's ``max_position_embeddings``, else 2048).
    """
    import gradio as gr

    formatter = ChatFormatter(tokenizer or model.tokenizer, template)
    if max_length is None:
        max_length = getattr(model.target.config, "max_position_embeddings", None) or 2048
    chat = ChatHandlers(model, formatter, max_length, max_new_tokens_limit(max_new_tokens))
    with gr.Blocks(title=title) as demo:
        header = f"## {title}\n{describe_model(model)}"
        ui = _layout(gr, header, max_new_tokens, lookup=model.lookup is not None)
        settings = [ui.use_eagle, ui.use_lookup, ui.temperature, ui.top_p, ui.max_new]
        answer_inputs = [ui.turns, ui.use_eagle, ui.use_lookup, ui.highlight, ui.temperature]
        answer_inputs += [ui.top_p, ui.max_new, ui.stop_flag]
        answer_outputs = [ui.chatbot, ui.figures]
        generate = dict(concurrency_id=GENERATE_QUEUE, concurrency_limit=1)
        for trigger in (ui.message.submit, ui.send.click):
            trigger(
                chat.take, [ui.message, ui.turns, ui.highlight, *settings],
                [ui.message, ui.chatbot], queue=False,
            ).then(chat.answer, answer_inputs, answer_outputs, **generate)  # fmt: skip
        ui.regenerate.click(
            chat.regenerate, [ui.turns, ui.highlight, ui.stop_flag, *settings], [ui.chatbot],
            queue=False,
        ).then(chat.answer, answer_inputs, answer_outputs, **generate)  # fmt: skip
        ui.stop.click(StopFlag.set, [ui.stop_flag], None, queue=False)
        for trigger in (ui.clear.click, ui.chatbot.clear):  # the Clear button, the chat's bin
            trigger(chat.clear, [ui.turns, ui.stop_flag], answer_outputs, queue=False)
        ui.highlight.change(chat_messages, [ui.turns, ui.highlight], [ui.chatbot], queue=False)
    return demo


class ChatHandlers:
    """The page's event handlers; the conversation (a list of Turn) is changed in place.

    Every input is checked on the server (a raw request can send anything): a message with bad
    settings is not taken, and an answer that fails for any reason removes its turn, so no turn
    is ever left pending and later answers land on their own messages.
    """

    def __init__(self, model, formatter, max_length: int, max_new_limit: int = 2048) -> None:
        self.model, self.formatter, self.max_length = model, formatter, max_length
        self.max_new_limit = max_new_limit

    def take(self, message: str, turns: list[Turn], highlight: bool, *settings: object):
        """Append ``message`` as a pending turn; ``settings`` (EAGLE, drafts from the context,
        temperature, top-p, max new tokens, as the page sends them) are checked first, and bad
        ones take nothing."""
        import gradio as gr

        if not isinstance(message, str):
            raise gr.Error(f"the message must be text, got {type(message).__name__}")
        self._check(settings)
        if message.strip():
            turns.append(Turn(message.strip(), answer=None))
        return "", chat_messages(turns, highlight)

    def answer(
        self, turns, use_eagle, use_lookup, highlight, temperature, top_p, max_new, stop_flag
    ):
        """Answer the first pending turn, yielding (chat messages, figures) after each step.

        On any error the turn is removed and the conversation shown again before the error.
        """
        import gradio as gr

        pending = [i for i, t in enumerate(turns) if t.answer is None]
        if not pending:
            yield chat_messages(turns, highlight), gr.skip()
            return
        turn = turns[pending[0]]
        try:
            raw = (use_eagle, use_lookup, temperature, top_p, max_new)
            settings = checked_settings(*raw, self.max_new_limit, self.max_length)
            updates = stream_answer(
                self.model, self.formatter, turns[: pending[0] + 1], settings, stop_flag
            )
            for update in updates:
                turn.answer, turn.segments = update.text, list(update.segments)
                if turn not in turns:  # Clear or Regenerate replaced it: show what is there now
                    yield chat_messages(turns, highlight), ""
                    return
                figures = update.figures.describe() + (" · stopped" if update.stopped else "")
                yield chat_messages(turns, highlight), figures
        except Exception as error:
            if turn in turns:
                turns.remove(turn)
            yield chat_messages(turns, highlight), ""
            raise gr.Error(failure_message(error)) from error
        finally:
            if turn.answer is None:  # ended before any step: never leave the turn pending
                turn.answer = ""

    def regenerate(self, turns: list[Turn], highlight: bool, stop_flag: StopFlag, *settings):
        """Ask the last message again; an answer still streaming for it is stopped first.
        ``settings`` as in ``take``: bad ones leave the conversation as it is."""
        self._check(settings)
        if turns:
            stop_flag.set()  # the next answer clears it
            turns[-1] = Turn(turns[-1].user, answer=None)
        return chat_messages(turns, highlight)

    @staticmethod
    def clear(turns: list[Turn], stop_flag: StopFlag):
        stop_flag.set()
        turns.clear()
        return [], ""

    def _check(self, settings: tuple[object, ...]) -> None:
        """Raise gr.Error naming the first bad setting (none given: nothing to check)."""
        import gradio as gr

        if not settings:
            return
        try:
            use_eagle, use_lookup, temperature, top_p, max_new = settings  # the page's order
            checked_settings(
                use_eagle, use_lookup, temperature, top_p, max_new, limit=self.max_new_limit
            )
        except SettingsError as error:
            raise gr.Error(str(error)) from error


def failure_message(error: Exception) -> str:
    """What the page says when an answer fails; its message has been removed by then."""
    if isinstance(error, SettingsError):
        return f"{error}; the message was removed, send it again"
    if isinstance(error, ValueError):  # the prompt does not fit
        return f"{error} (press Clear to start a new conversation)"
    return f"the answer failed ({type(error).__name__}: {error}); the message was removed"


def _layout(gr, header: str, max_new_tokens: int, lookup: bool = False) -> SimpleNamespace:
    """Create the page's components inside the open Blocks; returns them by name. ``lookup``:
    the initial state of the context switch."""
    ui = SimpleNamespace(turns=gr.State([]), stop_flag=gr.State(StopFlag()))
    gr.Markdown(header)
    with gr.Row():
        with gr.Column(scale=4):
            ui.chatbot = gr.Chatbot(
                label="Chat", elem_id="eagle-chatbot", height=460, feedback_options=None,
                buttons=["copy"],
            )  # fmt: skip
            ui.figures = gr.Markdown("", elem_id="eagle-figures")
            with gr.Row():
                ui.message = gr.Textbox(
                    placeholder="Type a message and press Enter", show_label=False, scale=5,
                    elem_id="eagle-message",
                )  # fmt: skip
                ui.send = gr.Button("Send", variant="primary", scale=1, elem_id="eagle-send")
            with gr.Row():
                ui.stop = gr.Button("Stop", elem_id="eagle-stop")
                ui.regenerate = gr.Button("Regenerate", elem_id="eagle-regenerate")
                ui.clear = gr.Button("Clear", elem_id="eagle-clear")
        with gr.Column(scale=1, min_width=220):
            ui.use_eagle = gr.Checkbox(
                True, label="EAGLE (off: no drafts from the head)", elem_id="eagle-use-draft"
            )
            ui.use_lookup = gr.Checkbox(
                lookup, label="Drafts from the context", elem_id="eagle-use-lookup",
                info="n-gram matches of the prompt and the answer so far join the draft tree; "
                "with EAGLE off they draft alone",
            )  # fmt: skip
            ui.highlight = gr.Checkbox(
                True, label="Highlight drafted tokens", elem_id="eagle-highlight"
            )
            gr.HTML(LEGEND, elem_id="eagle-legend")
            ui.temperature = gr.Slider(
                TEMPERATURE.low, TEMPERATURE.high, 0.0, step=0.05, label="Temperature (0 = greedy)"
            )
            ui.top_p = gr.Slider(0.0, 1.0, 0.0, step=0.01, label="Top-p (0 = off)")
            ui.max_new = gr.Slider(
                1, max_new_tokens_limit(max_new_tokens), max_new_tokens, step=1,
                label="Max new tokens",
            )  # fmt: skip
    return ui


def describe_model(model) -> str:
    target = model.target.config
    name = getattr(target, "name_or_path", "") or type(model.target.model).__name__
    variant = {"eagle1": "EAGLE-1", "eagle3": "EAGLE-3"}.get(model.head.variant, "EAGLE")
    return f"Target `{name}` · {variant} head · tree `{model.tree}` · `{model.target.device}`"


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, **kwargs: Any):
    """Serve ``demo`` with the page's CSS; ``kwargs`` go to ``gr.Blocks.launch``."""
    kwargs.setdefault("share", False)
    return demo.queue().launch(server_name=host, server_port=port, css=CSS, **kwargs)


# -- command line ------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, ModelSpec]:
    """The checked flags and the models they name."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args, check_ranges(parser, args)


def build_parser(
    prog: str = "python -m eagle.application.webui", description: str | None = None
) -> argparse.ArgumentParser:
    """The web UI's flags (models, page and server); other commands add their own."""
    p = argparse.ArgumentParser(prog=prog, description=description or __doc__.split("\n")[0])
    add_model_flags(p, lookup=True)
    p.add_argument(
        "--max-new-token", "--max-new-tokens", dest="max_new_token", type=int, default=512,
        help="the initial max-new-tokens setting of the page",
    )  # fmt: skip
    add_template_flag(p)
    p.add_argument(
        "--model-type", choices=sorted(MODEL_TYPES), default=None,
        help="the original web UI's name for the chat template: vicuna is --template "
        "vicuna_v1.1 (needs fschat), the others the tokenizer's own (default: use --template)",
    )  # fmt: skip
    add_quantization_flags(p)
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument(
        "--share", action="store_true", help="also open a public gradio.live link (off by default)"
    )
    return p


def check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ModelSpec:
    """Exit through ``parser`` naming the first web UI flag out of its range, before anything
    is loaded; else the models the flags name."""
    check_flags(parser, args, FLAG_BOUNDS)
    model_type = getattr(args, "model_type", None)
    if model_type is not None:
        if args.template not in (AUTO, MODEL_TYPES[model_type]):
            parser.error(f"--model-type {model_type} and --template {args.template}: give one")
        args.template = MODEL_TYPES[model_type]
    check_template_flag(parser, args.template)
    return checked_model_spec(parser, args)


def load_model(spec: ModelSpec):
    """The ``EaModel`` of ``spec`` (a head that cannot be loaded exits naming its flag)."""
    _say(
        f"loading target {spec.base_model_path} and head {spec.ea_model_path} "
        f"({spec.dtype}, {spec.device})"
    )
    model = load_ea_model(spec)
    _say(f"loaded: {model.head.variant} head, tree {model.tree}")
    return model


def main(argv: list[str] | None = None) -> None:
    args, spec = parse_args(argv)
    model = load_model(spec)
    try:
        demo = build_demo(model, model.tokenizer, args.template, max_new_tokens=args.max_new_token)
    except ValueError as error:  # no chat template and no --template, or an unknown template
        raise SystemExit(f"webui: {error}") from error
    launch(demo, args.host, args.port, share=args.share)


def _say(message: str) -> None:
    print(f"webui: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
