"""Training settings out of range: the config key (and the flag that set it) is named.

Every float of the config must be finite (JSON allows ``Infinity`` and ``NaN``; ``--lr inf``
parses), every count and weight in its range; the command line's overrides are checked the same
way and the error names the flag as well as the key.
"""

from __future__ import annotations

import json
import sys

import pytest

from eagle.train import main as train_main
from eagle.train.config import ConfigError, config_from_dict, load_config

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("train", {"lr": INF}, r"train\.lr must be a finite number"),
        ("train", {"lr": NAN}, r"train\.lr must be a finite number"),
        ("train", {"lr": -INF}, r"train\.lr must be a finite number"),
        ("train", {"betas": [0.9, NAN]}, r"train\.betas must be a finite number"),
        ("train", {"betas": [1.0, 0.95]}, r"train\.betas\[0\] must be in \[0, 1\)"),
        ("train", {"betas": [0.9, -0.1]}, r"train\.betas\[1\] must be in \[0, 1\)"),
        ("train", {"weight_decay": -0.01}, r"train\.weight_decay must be >= 0, got -0\.01"),
        ("train", {"weight_decay": INF}, r"train\.weight_decay must be a finite number"),
        ("train", {"grad_clip": 0}, r"train\.grad_clip must be > 0, got 0"),
        ("train", {"grad_clip": -1}, r"train\.grad_clip must be > 0"),
        ("train", {"grad_clip": NAN}, r"train\.grad_clip must be a finite number"),
        ("train", {"warmup_steps": -1}, r"train\.warmup_steps must be >= 0, got -1"),
        ("train", {"save_every": -1}, r"train\.save_every must be >= 0, got -1"),
        ("train", {"num_workers": -2}, r"train\.num_workers must be >= 0, got -2"),
        ("train", {"keep_checkpoints": 0}, r"train\.keep_checkpoints must be >= 1"),
        ("train", {"noise": -0.1}, r"train\.noise must be >= 0"),
        ("train", {"noise": INF}, r"train\.noise must be a finite number"),
        ("train", {"step_weight": 0}, r"train\.step_weight must be > 0"),
        ("train", {"step_weight": NAN}, r"train\.step_weight must be a finite number"),
        ("train", {"feature_weight": -1}, r"train\.feature_weight must be >= 0"),
        ("train", {"token_weight": INF}, r"train\.token_weight must be a finite number"),
        ("train", {"feature_weight": 0, "token_weight": 0}, r"train\.feature_weight and"),
        ("train", {"val_fraction": NAN}, r"train\.val_fraction must be a finite number"),
        ("train", {"seed": -1}, r"train\.seed must be >= 0"),
        ("train", {"seed": 2**32}, r"train\.seed must be < 2\*\*32"),
        ("train", {"epochs": 0}, r"train\.epochs must be >= 1"),
        ("train", {"max_steps": 0}, r"train\.max_steps must be >= 1"),
        ("head", {"rms_norm_eps": 0}, r"head\.rms_norm_eps must be > 0"),
        ("head", {"rope_theta": INF}, r"head\.rope_theta must be a finite number"),
        ("head", {"hidden_size": 0}, r"head\.hidden_size must be >= 1"),
        ("head", {"num_hidden_layers": 0}, r"head\.num_hidden_layers must be >= 1"),
        ("head", {"draft_vocab_size": -5}, r"head\.draft_vocab_size must be >= 1"),
        (
            "head",
            {"num_attention_heads": 6, "num_key_value_heads": 4},
            r"head\.num_attention_heads \(6\) must be a multiple of head\.num_key_value_heads",
        ),
    ],
)
def test_out_of_range_settings_are_errors_naming_the_key(section, values, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict({"variant": "eagle1", section: values})


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_json_infinity_and_nan_in_a_config_file_name_the_key(tmp_path, literal):
    path = tmp_path / "config.json"
    path.write_text('{"variant": "eagle3", "train": {"lr": LR}}'.replace("LR", literal))
    with pytest.raises(ConfigError, match=r"train\.lr must be a finite number"):
        load_config(path)


def test_valid_edges_are_accepted():
    config = config_from_dict(
        {
            "variant": "eagle1",
            "train": {
                "betas": [0.0, 0.999], "weight_decay": 0, "warmup_steps": 0, "save_every": 0,
                "num_workers": 0, "noise": 0, "token_weight": 0, "seed": 2**32 - 1,
            },
        }
    )  # fmt: skip
    assert config.train.seed == 2**32 - 1 and config.train.betas == (0.0, 0.999)


def _flags(tmp_path, *extra: str) -> list[str]:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"variant": "eagle3"}))
    return [
        "--basepath", "unused", "--tmpdir", str(tmp_path / "data"),
        "--cpdir", str(tmp_path / "ckpt"), "--configpath", str(config), *extra,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "value", "key"),
    [
        ("--lr", "inf", "train.lr"),
        ("--lr", "nan", "train.lr"),
        ("--lr", "-0.5", "train.lr"),
        ("--lr", "0.0", "train.lr"),
        ("--warmup-steps", "-1", "train.warmup_steps"),
        ("--epochs", "0", "train.epochs"),
        ("--max-steps", "-3", "train.max_steps"),
        ("--bs", "0", "train.batch_size"),
        ("--batch-tokens", "0", "train.batch_tokens"),
        ("--gradient-accumulation-steps", "0", "train.gradient_accumulation_steps"),
        ("--seed", "-1", "train.seed"),
        ("--val-fraction", "nan", "train.val_fraction"),
    ],
)
def test_bad_command_line_overrides_name_the_flag_and_the_key(tmp_path, flag, value, key):
    args = train_main.parse_args(_flags(tmp_path, flag, value))
    with pytest.raises(ConfigError) as caught:
        train_main.resolve_config(args)
    assert key in str(caught.value) and f"(given as {flag} {value})" in str(caught.value)


def test_the_command_line_ends_with_a_one_line_error_before_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["eagle.train.main", *_flags(tmp_path, "--lr", "inf")])
    with pytest.raises(SystemExit) as caught:
        train_main.cli()
    assert str(caught.value).startswith("eagle.train.main: error: train.lr must be a finite")
    assert "--lr inf" in str(caught.value)
    assert not (tmp_path / "ckpt").exists()
