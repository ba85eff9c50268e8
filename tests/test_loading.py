"""The one loading path of the commands (``eagle.model.loading``): flags -> ``ModelSpec`` ->
loaded models, its defaults, and errors that name the flag and its allowed values."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
from helpers import make_model, random_head, save_target_dir

from eagle.application import webui
from eagle.evaluation import gen_answer, profile_steps, tree_sweep
from eagle.ge_data import options
from eagle.model import loading, shipped
from eagle.model.checkpoint import save_head
from eagle.model.target import TargetModel
from eagle.train import main as train_main
from eagle.train import validate


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    loading.add_model_flags(parser, **kwargs)
    return parser


def _spec(argv: list[str], **kwargs) -> loading.ModelSpec:
    return loading.model_spec(_parser().parse_args(argv), **kwargs)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("loading")
    model = make_model("llama")
    save_target_dir(model, root / "target")
    save_head(random_head(TargetModel(model), "eagle3"), root / "head")
    (root / "head" / "tree.json").write_text('{"total_token": 6, "depth": 2, "top_k": 2}')
    return root


def test_defaults_are_the_built_in_target_its_shipped_head_and_tree():
    spec = _spec([])
    head = shipped.head_for("smollm2-135m-instruct")
    assert spec.base_model_path == "smollm2-135m-instruct"
    assert spec.ea_model_path == str(head)
    assert spec.tree == shipped.tree_settings(head)  # the head's tree.json
    assert spec.dtype == "bfloat16" and spec.torch_dtype is torch.bfloat16
    assert spec.device == ("cuda" if torch.cuda.is_available() else "cpu")  # auto
    assert spec.use_eagle3 is None


def test_tree_flags_override_the_heads_tree_json_over_the_library_defaults(dirs):
    head = ["--ea-model-path", str(dirs / "head")]
    assert _spec([*head, "--depth", "3"]).tree == {"total_token": 6, "depth": 3, "top_k": 2}
    no_tree = dirs / "plain-head"
    no_tree.mkdir()
    assert _spec(["--ea-model-path", str(no_tree)]).tree == loading.DEFAULT_TREE
    assert loading.DEFAULT_TREE == {"total_token": 60, "depth": 7, "top_k": 10}


def test_a_target_alone_needs_no_head_and_keeps_the_library_tree():
    spec = _spec(["--base-model-path", "some/model", "--device", "cpu"], need_head=False)
    assert (spec.base_model_path, spec.ea_model_path, spec.device) == ("some/model", None, "cpu")
    assert spec.tree == loading.DEFAULT_TREE


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--base-model-path", "org/other"], "--ea-model-path is required: no head ships for"),
        (["--device", "tpu"], "--device must be one of cpu, cuda, cuda:N, auto, got 'tpu'"),
        (["--total-token", "0"], "--total-token must be -1 or >= 1, got 0"),
        (["--depth", "0"], "--depth must be >= 1, got 0"),
        (["--top-k", "9000"], "--top-k 9000 (or the head's tree.json) exceeds the draft vocab"),
    ],
)
def test_bad_flags_name_the_flag_and_the_allowed_values(argv, message):
    with pytest.raises(ValueError) as error:
        _spec(argv)
    assert message in str(error.value)


def test_checked_spec_exits_2_and_a_bad_dtype_is_refused_by_argparse(capsys):
    parser = _parser()
    with pytest.raises(SystemExit) as exit_info:
        loading.checked_model_spec(parser, parser.parse_args(["--depth", "-1"]))
    assert exit_info.value.code == 2
    assert "--depth must be >= 1, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--dtype", "int8"])
    err = capsys.readouterr().err
    assert "argument --dtype: invalid choice: 'int8'" in err and "'bfloat16'" in err


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dtype": "int8"}, "--dtype must be one of float32, bfloat16, float16, got 'int8'"),
        ({"device": "auto"}, "concrete device"),
        ({"device": "npu"}, "--device must be one of cpu, cuda, cuda:N, got 'npu'"),
        ({"top_k": 0}, "--top-k must be >= 1, got 0"),
        ({"total_token": 2.5}, "--total-token must be -1 or an integer >= 1, got 2.5"),
        ({"use_eagle3": "yes"}, "use_eagle3 must be True, False or None"),
    ],
)
def test_a_spec_built_directly_is_checked_too(fields, message):
    with pytest.raises(ValueError) as error:
        loading.ModelSpec(**fields)
    assert message in str(error.value)


def test_the_old_flag_spellings_still_work(dirs):
    parser = _parser(target_aliases=("--basepath",), head_aliases=("--head",))
    args = parser.parse_args(["--basepath", "t", "--head", str(dirs / "head")])
    assert (args.base_model_path, args.ea_model_path) == ("t", str(dirs / "head"))
    train_args = train_main.parse_args(
        ["--basepath", "t", "--tmpdir", "d", "--cpdir", "c", "--configpath", "x.json"]
    )
    assert train_args.base_model_path == "t"
    assert train_main.parse_args(["--tmpdir", "d", "--cpdir", "c", "--configpath", "x.json"])
    val = validate.build_parser().parse_args(["--head", "h", "--data", "d"])
    assert val.ea_model_path == "h" and val.tree == (8, 4, 4)


def _model_flags(parser: argparse.ArgumentParser) -> dict[str, tuple]:
    names = ("--base-model-path", "--ea-model-path", "--dtype", "--device")
    return {
        a.option_strings[0]: (a.default, a.help)
        for a in parser._actions
        if a.option_strings and a.option_strings[0] in names
    }


def test_lookup_flags_follow_the_heads_tree_json_and_name_the_flag(dirs):
    from eagle.model.lookup import LookupSettings

    head = ["--ea-model-path", str(dirs / "head")]  # its tree.json has no lookup: off
    parser = _parser(lookup=True)
    spec = lambda argv: loading.model_spec(parser.parse_args(argv))  # noqa: E731
    assert spec(head).lookup is None
    assert spec([*head, "--lookup"]).lookup == LookupSettings()
    assert spec([*head, "--lookup-max-tokens", "5"]).lookup == LookupSettings(max_tokens=5)
    with pytest.raises(ValueError, match="--no-lookup"):
        spec([*head, "--no-lookup", "--lookup-matches", "2"])
    with pytest.raises(ValueError, match="--lookup-max-tokens"):
        spec([*head, "--lookup-max-tokens", "0"])
    on = dirs / "lookup-head"  # a head whose tree.json turns the lookup on
    on.mkdir(exist_ok=True)
    (on / "tree.json").write_text('{"total_token": 6, "lookup": {"max_tokens": 7}}')
    assert spec(["--ea-model-path", str(on)]).lookup == LookupSettings(max_tokens=7)
    assert spec(["--ea-model-path", str(on), "--lookup-matches", "2"]).lookup == LookupSettings(
        max_tokens=7, matches=2
    )
    assert spec(["--ea-model-path", str(on), "--no-lookup"]).lookup is None
    assert _spec([]).lookup is None  # a command without the lookup flags never turns it on


def test_dtype_auto_is_the_fastest_dtype_of_the_device(monkeypatch):
    assert loading.fastest_dtype("cuda") == "bfloat16"
    assert loading.fastest_dtype("cpu", size=32) in ("float32", "bfloat16")
    monkeypatch.setattr(loading, "fastest_dtype", lambda device: "float16")
    assert _spec(["--dtype", "auto"]).dtype == "float16"  # auto asks fastest_dtype
    assert _spec(["--dtype", "float32"]).dtype == "float32"
    with pytest.raises(ValueError, match="--dtype must be one of auto"):
        loading.resolve_dtype("int8", "cpu")


def test_every_command_has_the_same_model_flags_and_defaults():
    reference = _model_flags(_parser())
    parsers = {
        "webui": webui.build_parser(),
        "gen_answer": gen_answer.build_parser(),
        "tree_sweep": tree_sweep.build_parser(),
        "ge_data": options.build_parser(),
        "validate": validate.build_parser(),
    }
    for name, parser in parsers.items():
        flags = _model_flags(parser)
        assert flags, name
        assert all(flags[f] == reference[f] for f in flags), name
    tree = {
        a.option_strings[0]: a.help for a in _parser()._actions if "--depth" in a.option_strings
    }
    for parser in (webui.build_parser(), gen_answer.build_parser()):
        assert {
            a.option_strings[0]: a.help for a in parser._actions if "--depth" in a.option_strings
        } == tree
    with pytest.raises(SystemExit):  # profile_steps parses and checks at once
        profile_steps.parse_args(["--device", "tpu"])


def test_the_loaders_load_what_the_spec_says_and_show_the_library_logs(dirs, monkeypatch):
    monkeypatch.setattr(logging.getLogger("eagle"), "level", logging.NOTSET)
    spec = _spec(
        ["--base-model-path", str(dirs / "target"), "--ea-model-path", str(dirs / "head"),
         "--dtype", "float32", "--device", "cpu", "--top-k", "3", "--use-eagle3"]
    )  # fmt: skip
    model = loading.load_ea_model(spec)
    assert logging.getLogger("eagle").level == logging.INFO
    assert (model.tree.total_token, model.tree.depth, model.tree.top_k) == (6, 2, 3)
    assert model.target.dtype == torch.float32 and model.target.device.type == "cpu"
    assert not model.training
    target, tokenizer = loading.load_target(spec)
    assert target.vocab_size == model.target.vocab_size and tokenizer is not None


def test_a_head_that_cannot_be_loaded_exits_naming_the_flag(dirs):
    spec = _spec(
        ["--base-model-path", str(dirs / "target"), "--ea-model-path", str(dirs / "head"),
         "--dtype", "float32", "--device", "cpu", "--no-eagle3"]
    )  # fmt: skip
    with pytest.raises(SystemExit, match="--ea-model-path"):
        loading.load_ea_model(spec)
