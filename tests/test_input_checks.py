"""The shared number checks of the command lines and the web UI (no model is loaded here)."""

from __future__ import annotations

import argparse
import json

import pytest

from eagle.input_checks import (
    NON_NEGATIVE,
    POSITIVE_INT,
    PROBABILITY,
    TREE_FLAGS,
    Bound,
    check_flags,
    check_top_k_fits,
    head_vocab_size,
)

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("value", [NAN, INF, -INF, None, "0.5", "abc", True, [1], 10**400])
def test_probability_refuses_what_is_not_a_finite_number(value):
    with pytest.raises(ValueError, match=r"^top_p must be a finite number in \[0, 1\], got "):
        PROBABILITY.check("top_p", value)


@pytest.mark.parametrize("value", [-0.1, 1.5, 5])
def test_numbers_out_of_range_are_told_the_range(value):
    with pytest.raises(ValueError, match=rf"^top_p must be in \[0, 1\], got {value}$"):
        PROBABILITY.check("top_p", value)


def test_accepted_values_come_back_as_numbers():
    assert PROBABILITY.check("p", 1) == 1.0 and isinstance(PROBABILITY.check("p", 1), float)
    assert NON_NEGATIVE.check("t", 1e308) == 1e308
    assert POSITIVE_INT.check("n", 30.0) == 30 and isinstance(POSITIVE_INT.check("n", 30.0), int)
    assert TREE_FLAGS["--total-token"].check("--total-token", -1) == -1


@pytest.mark.parametrize("value", [0, -2, 2.5, NAN, INF, None, "3", False])
def test_integers_refuse_fractions_non_numbers_and_out_of_range(value):
    with pytest.raises(ValueError, match=r"n must be (an integer )?>= 1, got"):
        POSITIVE_INT.check("n", value)


def test_descriptions_name_the_allowed_values():
    assert Bound(0, 1, low_open=True).describe() == "a finite number in (0, 1]"
    assert Bound(high=5, integer=True).describe() == "an integer <= 5"
    assert TREE_FLAGS["--total-token"].describe() == "-1 or an integer >= 1"
    assert TREE_FLAGS["--total-token"].limits() == "-1 or >= 1"


def test_check_flags_exits_2_naming_the_flag_and_skips_unset_ones(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--depth", type=int)
    check_flags(parser, parser.parse_args([]), {"--top-p": PROBABILITY, "--depth": POSITIVE_INT})
    with pytest.raises(SystemExit) as exit_info:
        check_flags(parser, parser.parse_args(["--top-p", "nan"]), {"--top-p": PROBABILITY})
    assert exit_info.value.code == 2
    assert "--top-p must be a finite number in [0, 1], got nan" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        check_flags(parser, parser.parse_args(["--depth", "0"]), {"--depth": POSITIVE_INT})
    assert "--depth must be >= 1, got 0" in capsys.readouterr().err


def test_top_k_against_a_local_heads_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"vocab_size": 96, "draft_vocab_size": 32}))
    assert head_vocab_size(tmp_path) == 32
    check_top_k_fits(32, tmp_path)
    with pytest.raises(ValueError, match=r"--top-k 33 .* \(32 tokens\): use --top-k in 1\.\.32"):
        check_top_k_fits(33, tmp_path)
    assert head_vocab_size(tmp_path / "absent") is None  # a hub id: checked when loading
    (tmp_path / "config.json").write_text("[broken")
    assert head_vocab_size(tmp_path) is None
