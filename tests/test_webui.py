"""The web UI without a browser: chat logic, the page builder's wiring, and the command line.

A tiny random Llama with a word-level tokenizer (w0..w95, chat template, EOS w2) serves as the
model; its head is fitted to the test prompt, so EAGLE drafts are mostly accepted and the
highlighting by source (head, context, target) is exercised; a prompt that repeats the model's
own answer makes the context lookup draft. A scripted stub model pins the split of each step
into sources. ``tiny_chat_model`` is also used by the browser test.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import fit_head, make_model, random_head, save_chat_target_dir
from transformers import AutoTokenizer

from eagle.application import webui
from eagle.application.chat import (
    CONTEXT_CLASS,
    HIGHLIGHT_CLASS,
    AnswerText,
    Figures,
    Segment,
    Settings,
    SettingsError,
    StopFlag,
    Turn,
    checked_settings,
    conversation_messages,
    render_answer,
    split_step,
    step_runs,
    stream_answer,
)
from eagle.chat.formatter import ChatFormatter
from eagle.model.checkpoint import save_head
from eagle.model.ea_model import EaModel
from eagle.model.generate import GenerationConfig, StepResult
from eagle.model.lookup import LookupSettings
from eagle.model.target import TargetModel

MESSAGE = "w10 w11 w12"  # avoid w2x: the EOS token w2 is matched inside longer words


def tiny_chat_model(directory, message: str = MESSAGE, new_tokens: int = 60) -> EaModel:
    """A saved tiny chat target (in ``directory``) and an EAGLE-3 head fitted to ``message``."""
    model = make_model("llama")
    save_chat_target_dir(model, directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    target = TargetModel(model)
    prompt = ChatFormatter(tokenizer).prompt_ids([{"role": "user", "content": message}])
    head = fit_head(random_head(target, "eagle3"), target, torch.tensor([prompt]), new_tokens, 100)
    return EaModel(target, head, tokenizer)


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, one_thread):
    return tiny_chat_model(tmp_path_factory.mktemp("chat-target"))


@pytest.fixture(scope="module")
def formatter(chat_model):
    return ChatFormatter(chat_model.tokenizer)


# -- chat logic ---------------------------------------------------------------------------------


def test_split_step_marks_drafts_and_the_bonus_token():
    assert split_step([7, 8, 9], accepted=2) == ([7, 8], [9])
    assert split_step([7], accepted=0) == ([], [7])
    assert split_step([7, 2], accepted=4) == ([7, 2], [])  # EOS cut the step short


def test_step_runs_split_the_drafts_by_source():
    assert step_runs([7, 8, 9], accepted=2) == [("head", [7, 8]), ("target", [9])]
    flags = [False, True, True, False]
    assert step_runs([5, 6, 7, 8, 9], 4, flags) == [
        ("head", [5]), ("context", [6, 7]), ("head", [8]), ("target", [9])
    ]  # fmt: skip
    assert step_runs([6, 2], 3, [True, True, True]) == [("context", [6, 2])]  # EOS cut it
    assert step_runs([7], 0, []) == [("target", [7])]


def test_segment_sources():
    assert [Segment("a", s).drafted for s in ("target", "head", "context")] == [0, 1, 1]
    with pytest.raises(ValueError, match="source must be one of target, head, context"):
        Segment("a", "lookup")  # type: ignore[arg-type]


def test_conversation_messages_include_earlier_answers():
    turns = [Turn("hi", "hello"), Turn("again")]
    assert conversation_messages(turns) == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "again"},
    ]


def test_answer_text_holds_back_an_incomplete_character():
    from helpers import byte_tokenizer

    tokenizer = byte_tokenizer("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    answer = AnswerText(ChatFormatter(tokenizer))
    first, second = tokenizer("é", add_special_tokens=False)["input_ids"]
    answer.extend([tokenizer.convert_tokens_to_ids("a")], "target")
    answer.extend([first], "context")
    assert answer.text == "a" and answer.segments == [Segment("a", "target")]
    answer.extend([second], "context", final=True)
    assert answer.text == "aé"
    assert answer.segments == [Segment("a", "target"), Segment("é", "context")]


class _RewritingFormatter:
    """Decodes ids through a table, so a later id can rewrite earlier text."""

    def __init__(self, texts: dict[tuple[int, ...], str]) -> None:
        self.texts = texts

    def answer_text(self, ids: list[int]) -> str:
        return self.texts[tuple(ids)]


def test_answer_text_keeps_segments_consistent_when_decoding_rewrites():
    answer = AnswerText(_RewritingFormatter({(1,): "ab", (1, 2): "abcd", (1, 2, 3): "abXY"}))
    answer.extend([1], "target")
    answer.extend([2], "head")
    assert answer.segments == [Segment("ab", "target"), Segment("cd", "head")]
    answer.extend([3], "context")
    assert answer.segments == [Segment("ab", "target"), Segment("XY", "context")]
    assert answer.text == "abXY"


def test_render_answer_escapes_and_marks_drafted_text_by_source():
    segments = [Segment("a<b>\n", "target"), Segment("c & d", "head"), Segment("e<", "context")]
    assert render_answer(segments, highlight=False) == "a<b>\nc & de<"
    html = render_answer(segments, highlight=True)
    assert html == (
        f'<div class="eagle-answer">a&lt;b&gt;<br><mark class="{HIGHLIGHT_CLASS}">c &amp; d'
        f'</mark><mark class="{CONTEXT_CLASS}">e&lt;</mark></div>'
    )
    assert HIGHLIGHT_CLASS != CONTEXT_CLASS
    assert f"mark.{CONTEXT_CLASS}" in webui.CSS and f".dark mark.{CONTEXT_CLASS}" in webui.CSS


def test_figures_report_speed_and_compression():
    figures = Figures(new_tokens=30, steps=10, seconds=2.0, use_draft=True)
    assert figures.tokens_per_second == 15.0 and figures.tokens_per_step == 3.0
    text = figures.describe()
    assert "15.0 tokens/s" in text and "3.00 tokens per target step" in text and "EAGLE" in text
    assert "plain decoding" in Figures(5, 5, 1.0, use_draft=False).describe()
    methods = [Figures(5, 5, 1.0, d, lookup).method for d in (True, False) for lookup in (1, 0)]
    assert methods == ["EAGLE + context lookup", "EAGLE", "context lookup", "plain decoding"]
    assert "**context lookup**" in Figures(5, 2, 1.0, use_draft=False, lookup=True).describe()


def test_stream_answer_is_lossless_and_counts_steps(chat_model, formatter):
    turns = [Turn(MESSAGE)]
    updates = list(stream_answer(chat_model, formatter, turns, _choice(max_new_tokens=40)))
    prompt = torch.tensor([formatter.prompt_ids(conversation_messages(turns))])
    ids, new_tokens, _ = chat_model.naivegenerate(prompt, max_new_tokens=40, log=True)
    last = updates[-1]
    assert last.finished and all(not u.finished for u in updates[:-1])
    assert last.text == formatter.answer_text(ids[0, prompt.shape[1] :].tolist())
    assert "".join(s.text for s in last.segments) == last.text
    assert last.figures.new_tokens == new_tokens == 40
    assert last.figures.steps < new_tokens  # the fitted head's drafts are accepted
    assert any(s.drafted for s in last.segments) and any(not s.drafted for s in last.segments)
    assert [len(u.text) for u in updates] == sorted(len(u.text) for u in updates)  # streamed


def _choice(use_draft: bool = True, lookup: bool = False, **generation) -> Settings:
    return Settings(use_draft, lookup, GenerationConfig.of(**{"max_new_tokens": 256, **generation}))


def test_plain_decoding_takes_one_step_per_token(chat_model, formatter):
    settings = _choice(use_draft=False, max_new_tokens=12)
    *_, last = stream_answer(chat_model, formatter, [Turn(MESSAGE)], settings)
    assert last.figures.steps == last.figures.new_tokens == 12
    assert last.figures.tokens_per_step == 1.0
    assert not any(s.drafted for s in last.segments)


def test_sampling_settings_reach_the_decode_loop(chat_model, formatter):
    settings = _choice(temperature=0.8, top_p=0.9, max_new_tokens=20)
    *_, last = stream_answer(chat_model, formatter, [Turn(MESSAGE)], settings)
    assert last.finished and last.figures.new_tokens <= 20
    with pytest.raises(ValueError, match="top_p"):
        next(stream_answer(chat_model, formatter, [Turn(MESSAGE)], _choice(top_p=1.5)))


def test_stop_flag_ends_the_answer_after_the_current_step(chat_model, formatter):
    stop = StopFlag()
    stop.set()  # a stale flag from an earlier Stop is cleared when the answer starts
    updates = stream_answer(chat_model, formatter, [Turn(MESSAGE)], Settings(), stop=stop)
    first = next(updates)
    assert not first.finished
    stop.set()
    second = next(updates)
    assert second.stopped and second.finished
    assert list(updates) == []


def test_prompt_too_long_is_a_clear_error(chat_model, formatter):
    with pytest.raises(ValueError, match="max_length"):
        next(stream_answer(chat_model, formatter, [Turn(MESSAGE)], _choice(max_length=4)))


# -- drafts from the context ---------------------------------------------------------------------


class _WordsFormatter:
    """Prompt [0]; answer ids as words t<id>, so each id's text is its own."""

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        return [0]

    def answer_text(self, ids: list[int]) -> str:
        return " ".join(f"t{i}" for i in ids)


class _ScriptedModel:
    """Yields the steps of ``script`` (new ids, accepted drafts, accepted_from_context) and
    records how it was asked (use_draft, the config's lookup)."""

    def __init__(self, script, lookup: LookupSettings | None = None) -> None:
        self.script, self.lookup, self.calls = script, lookup, []

    def generate_steps(self, input_ids, use_draft: bool, config: GenerationConfig):
        self.calls.append((use_draft, config.lookup))
        ids = input_ids[0].tolist()
        for n, (new, accepted, flags) in enumerate(self.script):
            ids += new
            from_context = None if flags is None else torch.tensor(flags, dtype=torch.bool)
            finished = n == len(self.script) - 1
            yield StepResult(
                torch.tensor([ids]), len(ids) - 1, n + 1, accepted, finished, None, from_context
            )


SCRIPT = [  # the prefill, then steps of head, context and mixed drafts; None: no lookup branch
    ([5], 0, None),
    ([6, 7, 8, 9], 3, [False, True, True]),
    ([10, 11], 1, None),
    ([12, 13, 14], 2, [True, True]),
    ([15], 0, []),
]


def test_stream_answer_splits_each_step_by_source():
    model = _ScriptedModel(SCRIPT)
    *_, last = stream_answer(model, _WordsFormatter(), [Turn("hi")], _choice(lookup=True))
    assert last.text == " ".join(f"t{i}" for i in range(5, 16))
    assert [(s.source, s.text) for s in last.segments] == [
        ("target", "t5"), ("head", " t6"), ("context", " t7 t8"), ("target", " t9"),
        ("head", " t10"), ("target", " t11"), ("context", " t12 t13"), ("target", " t14 t15"),
    ]  # fmt: skip
    assert last.figures.method == "EAGLE + context lookup"


def test_the_context_switch_picks_the_models_lookup_or_the_defaults():
    own = LookupSettings(max_tokens=3)
    for model_lookup, expected in ((None, LookupSettings()), (own, own)):
        model = _ScriptedModel(SCRIPT[:1], model_lookup)
        list(stream_answer(model, _WordsFormatter(), [Turn("hi")], _choice(False, lookup=True)))
        list(stream_answer(model, _WordsFormatter(), [Turn("hi")], _choice(True)))
        assert model.calls == [(False, expected), (True, False)]  # off: never the model's


SHORT = {"max_new_tokens": 30}


@pytest.fixture(scope="module")
def repeating_turns(chat_model, formatter) -> list[Turn]:
    """A message that repeats the model's own answer to MESSAGE, then MESSAGE again: the answer
    to it follows text of the context, which the lookup drafts."""
    *_, first = stream_answer(chat_model, formatter, [Turn(MESSAGE)], _choice(False, **SHORT))
    return [Turn(f"{first.text} {MESSAGE}")]


def test_context_drafts_are_highlighted_as_context(chat_model, formatter, repeating_turns):
    *_, plain = stream_answer(chat_model, formatter, repeating_turns, _choice(False, **SHORT))
    assert {s.source for s in plain.segments} == {"target"}
    for use_draft in (True, False):
        settings = _choice(use_draft, lookup=True, **SHORT)
        *_, last = stream_answer(chat_model, formatter, repeating_turns, settings)
        assert last.text == plain.text  # greedy: lossless with any drafts
        sources = {s.source for s in last.segments}
        assert "context" in sources, "no context draft was accepted: the test exercised nothing"
        assert ("head" in sources) is use_draft  # lookup alone drafts from the context only
        assert last.figures.steps < plain.figures.steps
        html = render_answer(last.segments, highlight=True)
        assert f'<mark class="{CONTEXT_CLASS}">' in html
        assert (f'<mark class="{HIGHLIGHT_CLASS}">' in html) is use_draft


# -- the page builder ---------------------------------------------------------------------------


def _handlers(demo) -> dict:
    return {f.name: f.fn for f in demo.fns.values() if f.fn is not None}


def test_build_demo_lays_out_the_page(chat_model):
    import gradio as gr

    demo = webui.build_demo(chat_model, max_new_tokens=33)
    assert isinstance(demo, gr.Blocks)
    by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert isinstance(by_id["eagle-chatbot"], gr.Chatbot)
    assert by_id["eagle-use-draft"].value is True and by_id["eagle-highlight"].value is True
    assert by_id["eagle-use-lookup"].value is False  # the model has no default lookup
    assert by_id["eagle-use-lookup"].label == "Drafts from the context"
    legend = by_id["eagle-legend"].value
    assert (
        f'<mark class="{HIGHLIGHT_CLASS}">' in legend
        and f'<mark class="{CONTEXT_CLASS}">' in legend
    )
    labels = {b.value for b in demo.blocks.values() if isinstance(b, gr.Button)}
    assert {"Send", "Stop", "Regenerate", "Clear"} <= labels
    sliders = {b.label: b for b in demo.blocks.values() if isinstance(b, gr.Slider)}
    assert sliders["Max new tokens"].value == 33
    assert {"Temperature (0 = greedy)", "Top-p (0 = off)"} <= set(sliders)
    assert {"take", "answer", "regenerate", "clear", "chat_messages"} <= set(_handlers(demo))


def test_build_demo_handlers_chat_regenerate_and_clear(chat_model):
    handlers = _handlers(webui.build_demo(chat_model))
    turns, stop = [], StopFlag()
    box, shown = handlers["take"](MESSAGE, turns, True)
    assert box == "" and shown == [{"role": "user", "content": MESSAGE}]
    outputs = list(handlers["answer"](turns, True, False, True, 0.0, 0.0, 30, stop))
    messages, figures = outputs[-1]
    assert len(outputs) > 2 and "tokens per target step" in figures
    assert f'class="{HIGHLIGHT_CLASS}"' in messages[-1]["content"]
    eagle_answer = turns[0].answer
    assert eagle_answer and turns[0].segments

    handlers["regenerate"](turns, True, stop)
    assert turns[0].answer is None and turns[0].user == MESSAGE and stop.is_set()
    *_, (messages, figures) = handlers["answer"](turns, False, False, False, 0.0, 0.0, 30, stop)
    assert messages[-1] == {"role": "assistant", "content": eagle_answer}  # greedy: identical
    assert "plain decoding" in figures and "1.00 tokens per target step" in figures

    handlers["take"](MESSAGE, turns, False)  # Clear while an answer streams: it stops
    stream = handlers["answer"](turns, True, False, False, 0.0, 0.0, 30, stop)
    next(stream)
    handlers["clear"](turns, stop)
    assert list(stream) == [([], "")]
    handlers["take"](MESSAGE, turns, False)

    handlers["take"]("   ", turns, False)  # an empty message adds nothing
    assert len(turns) == 1
    done = [Turn("hi", "done")]
    assert len(list(handlers["answer"](done, True, False, True, 0, 0, 5, stop))) == 1
    assert handlers["clear"](turns, stop) == ([], "") and turns == [] and stop.is_set()


def test_the_page_answers_with_drafts_from_the_context(chat_model, repeating_turns):
    import gradio as gr

    on = EaModel(chat_model.target, chat_model.head, chat_model.tokenizer, lookup=True)
    demo = webui.build_demo(on)
    switch = next(
        b for b in demo.blocks.values() if getattr(b, "elem_id", "") == "eagle-use-lookup"
    )
    assert isinstance(switch, gr.Checkbox) and switch.value is True  # the model's default
    handlers, turns = _handlers(demo), []
    handlers["take"](repeating_turns[0].user, turns, True, False, True, 0.0, 0.0, 30)
    *_, (messages, figures) = handlers["answer"](turns, False, True, True, 0.0, 0.0, 30, StopFlag())
    assert figures.startswith("**context lookup**")
    assert f'<mark class="{CONTEXT_CLASS}">' in messages[-1]["content"]
    assert f'<mark class="{HIGHLIGHT_CLASS}">' not in messages[-1]["content"]


# -- server-side checks: bad inputs never leave the conversation inconsistent --------------------

NAN, INF = float("nan"), float("inf")
GOOD = (True, False, 0.0, 0.0, 8)  # EAGLE, context, temperature, top-p, max new tokens
BAD_SETTINGS = [
    *((0, value, "EAGLE") for value in (None, "yes", 1)),
    *((1, value, "Drafts from the context") for value in (None, "true", 1, 0.0)),
    *((2, v, "Temperature") for v in (NAN, INF, -INF, -0.5, 2.5, 1e308, None, "0.5", "hot")),
    *((3, value, "Top-p") for value in (NAN, INF, -0.1, 5, None, "0.9")),
    *((4, v, "Max new tokens") for v in (NAN, INF, -INF, 0, -3, 10**9, 30.5, None, "30")),
]


def test_checked_settings_read_both_switches():
    for use_draft, use_lookup in ((True, True), (False, True), (True, False)):
        settings = checked_settings(use_draft, use_lookup, 0.5, 0.9, 7, limit=10)
        assert (settings.use_draft, settings.use_lookup) == (use_draft, use_lookup)
        assert settings.generation.max_new_tokens == 7
    with pytest.raises(SettingsError, match="Drafts from the context must be true or false"):
        checked_settings(True, "on", 0.0, 0.0, 7, limit=10)


@pytest.fixture(scope="module")
def page(chat_model):
    return _handlers(webui.build_demo(chat_model))


def _settings(position: int, value) -> list:
    settings = list(GOOD)
    settings[position] = value
    return settings


def _answer(page, turns, settings, outputs: list | None = None) -> list:
    """Run the answer handler to its end, collecting its outputs in ``outputs`` (also when it
    raises) and returning them."""
    use_eagle, use_lookup, *sampling = settings
    outputs = [] if outputs is None else outputs
    for output in page["answer"](turns, use_eagle, use_lookup, True, *sampling, StopFlag()):
        outputs.append(output)
    return outputs


@pytest.mark.parametrize(("position", "value", "field"), BAD_SETTINGS)
def test_bad_settings_take_no_message_and_regenerate_nothing(page, position, value, field):
    import gradio as gr

    turns = [Turn("hi", "hello")]
    with pytest.raises(gr.Error, match=f"{field} must be"):
        page["take"](MESSAGE, turns, True, *_settings(position, value))
    with pytest.raises(gr.Error, match=f"{field} must be"):
        page["regenerate"](turns, True, StopFlag(), *_settings(position, value))
    assert len(turns) == 1 and (turns[0].user, turns[0].answer) == ("hi", "hello")


@pytest.mark.parametrize(("position", "value", "field"), BAD_SETTINGS)
def test_bad_settings_reaching_the_answer_remove_its_turn(page, position, value, field):
    import gradio as gr

    first = Turn("hi", "hello")
    turns = [first, Turn(MESSAGE, answer=None)]  # taken by a raw request that skipped take
    outputs = []
    with pytest.raises(gr.Error, match=f"{field} must be .*send it again"):
        _answer(page, turns, _settings(position, value), outputs)
    assert turns == [first] and first.answer == "hello"
    assert outputs == [(webui.chat_messages(turns, True), "")]  # the page shows the state


def test_nan_max_new_tokens_no_longer_shifts_later_answers(page):
    """The original failure: the turn stayed pending and every later answer landed on it."""
    import gradio as gr

    turns: list[Turn] = []
    page["take"](MESSAGE, turns, True)  # the page's own take, then a raw answer request
    with pytest.raises(gr.Error, match="Max new tokens must be an integer in \\[1, 2048\\]"):
        _answer(page, turns, _settings(4, NAN))
    assert turns == []
    for message in ("w13 w14", "w15 w16"):
        page["take"](message, turns, True, *GOOD)
        *_, (messages, figures) = _answer(page, turns, GOOD)
        assert messages[-2] == {"role": "user", "content": message}
        assert messages[-1]["role"] == "assistant" and "tokens per target step" in figures
    assert [t.user for t in turns] == ["w13 w14", "w15 w16"]
    assert all(t.answer for t in turns)


def test_a_model_error_mid_answer_removes_the_turn(page, chat_model, monkeypatch):
    import gradio as gr

    original = chat_model.generate_steps

    def failing(*args, **kwargs):
        steps = original(*args, **kwargs)
        yield next(steps)
        raise RuntimeError("probability tensor contains either inf, nan or element < 0")

    monkeypatch.setattr(chat_model, "generate_steps", failing)
    turns = [Turn("hi", "hello"), Turn(MESSAGE, answer=None)]
    outputs = []
    with pytest.raises(gr.Error, match="the answer failed \\(RuntimeError: probability"):
        _answer(page, turns, GOOD, outputs)
    assert [t.user for t in turns] == ["hi"]
    assert len(outputs) == 2 and outputs[-1] == (webui.chat_messages(turns, True), "")
    assert all(t.answer is not None for t in turns)


@pytest.mark.parametrize("message", [None, 3, ["w10"]])
def test_a_message_that_is_not_text_is_refused(page, message):
    import gradio as gr

    turns = [Turn("hi", "hello")]
    with pytest.raises(gr.Error, match="the message must be text"):
        page["take"](message, turns, True, *GOOD)
    assert len(turns) == 1


def test_build_demo_needs_a_chat_template(tmp_path, chat_model):
    from helpers import byte_tokenizer

    with pytest.raises(ValueError, match="chat template"):
        webui.build_demo(chat_model, byte_tokenizer(chat_template=None))


# -- command line -------------------------------------------------------------------------------


def test_importing_the_module_loads_and_parses_nothing():
    code = (
        "import sys; sys.argv = ['x', '--bogus']; import eagle.application.webui; "
        "print('gradio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_flags_defaults_and_variant_switches():
    args, spec = webui.parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    assert args.ea_model_path is None and args.use_eagle3 is None
    assert spec.ea_model_path.endswith("smollm2-135m-instruct-eagle3")  # the shipped head
    assert webui.parse_args(["--no-eagle3"])[1].use_eagle3 is False
    assert webui.parse_args(["--use-eagle3"])[1].use_eagle3 is True
    assert webui.parse_args(["--max-new-tokens", "64"])[0].max_new_token == 64
    assert spec.lookup == LookupSettings()  # the shipped head's tree.json turns it on
    assert webui.parse_args(["--lookup"])[1].lookup == LookupSettings()
    lookup = webui.parse_args(["--lookup-max-tokens", "5", "--lookup-matches", "2"])[1].lookup
    assert lookup == LookupSettings(max_tokens=5, matches=2)  # a --lookup-* flag turns it on
    assert webui.parse_args(["--no-lookup"])[1].lookup is None


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--depth", "0"], "--depth"),
        (["--top-k", "-1"], "--top-k"),
        (["--total-token", "0"], "--total-token"),
        (["--max-new-token", "0"], "--max-new-token"),
        (["--port", "70000"], "--port must be in [1, 65535], got 70000"),
        (["--top-k", "0"], "--top-k must be >= 1, got 0"),
        (["--total-token", "-2"], "--total-token must be -1 or >= 1"),
        (["--device", "tpu"], "--device must be one of cpu, cuda, cuda:N, auto, got 'tpu'"),
        (["--dtype", "int8"], "float32"),
        (["--use-eagle3", "--no-eagle3"], "not allowed"),
        (["--lookup-max-tokens", "0"], "--lookup-max-tokens"),
        (["--lookup-min-ngram", "5"], "min_ngram (5) must be <= max_ngram (4)"),
        (["--no-lookup", "--lookup-matches", "2"], "--no-lookup turns the lookup off"),
    ],
)
def test_bad_flags_are_errors_naming_the_flag(argv, named, capsys):
    with pytest.raises(SystemExit):
        webui.parse_args(argv)
    assert named in capsys.readouterr().err


def test_default_target_without_a_shipped_head_names_the_flag(monkeypatch, capsys):
    from eagle.model import shipped

    def missing(name):
        raise FileNotFoundError(f"the shipped head for {name} is missing")

    monkeypatch.setattr(shipped, "head_for", missing)
    with pytest.raises(SystemExit) as exit_info:  # before anything is loaded
        webui.parse_args([])
    assert exit_info.value.code == 2
    assert "--ea-model-path is required: the shipped head" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_dirs(tmp_path_factory, chat_model):
    root = tmp_path_factory.mktemp("webui-main")
    chat_model.base_model.save_pretrained(root / "target")
    chat_model.tokenizer.save_pretrained(root / "target")
    save_head(chat_model.ea_layer, root / "head")
    return root


def test_main_loads_the_paths_and_serves_on_loopback_unshared(saved_dirs, monkeypatch):
    served = {}

    def launch(demo, host, port, **kwargs):
        header = next(b.value for b in demo.blocks.values() if "Target" in str(b.value))
        by_id = {b.elem_id: b for b in demo.blocks.values() if getattr(b, "elem_id", None)}
        lookup = by_id["eagle-use-lookup"].value
        served.update(kwargs, host=host, header=header, lookup=lookup)

    monkeypatch.setattr(webui, "launch", launch)
    paths = ["--base-model-path", str(saved_dirs / "target")]
    paths += ["--ea-model-path", str(saved_dirs / "head"), "--dtype", "float32"]
    webui.main([*paths, "--device", "cpu", "--total-token", "8", "--depth", "3", "--top-k", "2"])
    assert (served["host"], served["share"]) == ("127.0.0.1", False)
    assert "EAGLE-3 head" in served["header"]
    assert "total_token=8, depth=3, top_k=2" in served["header"]
    assert served["lookup"] is False
    webui.main([*paths, "--device", "cpu", "--lookup-max-tokens", "4"])
    assert served["lookup"] is True  # the flags' lookup is the model's default: the switch is on
    with pytest.raises(SystemExit, match="EAGLE3"):  # --no-eagle3 means it: an EAGLE-1 head
        webui.main([*paths, "--device", "cpu", "--no-eagle3"])
