"""The embedded default target: name resolution, cache validation, and (slow) the conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eagle.model import defaults


def test_other_names_and_paths_pass_through():
    assert defaults.resolve_model_path("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"
    assert defaults.resolve_model_path("/some/local/dir") == "/some/local/dir"
    assert defaults.is_registered("SmolLM2-135M-Instruct")


def test_cache_folder_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("EAGLE_CACHE", str(tmp_path))
    assert defaults.cache_root() == tmp_path


def test_incomplete_or_corrupt_conversions_are_detected(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    assert not defaults._is_complete(folder)  # no marker: an interrupted conversion
    (folder / "eagle-conversion.json").write_text(json.dumps({"sizes": {"model.safetensors": 10}}))
    assert defaults._is_complete(folder)
    (folder / "model.safetensors").write_bytes(b"x" * 4)  # truncated
    assert not defaults._is_complete(folder)


def _stand_in(calls: list[Path]):
    """A tiny conversion: two files, each call recorded."""

    def convert(out: Path) -> None:
        calls.append(out)
        (out / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        (out / "config.json").write_text('{"model_type": "stand-in"}')

    return convert


def test_a_flipped_byte_of_the_same_size_is_detected_and_converted_again(monkeypatch, tmp_path):
    monkeypatch.setenv("EAGLE_CACHE", str(tmp_path))
    calls: list[Path] = []
    folder = defaults.ensure_converted("stand-in", _stand_in(calls))
    assert folder == tmp_path / "stand-in" and len(calls) == 1
    assert "sha256" in json.loads((folder / "eagle-conversion.json").read_text())
    assert defaults.ensure_converted("stand-in", _stand_in(calls)) == folder
    assert len(calls) == 1  # intact: no second conversion
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[1000] ^= 0x01  # same size, one bit changed
    weights.write_bytes(bytes(data))
    assert "SHA-256" in defaults.check_conversion(folder)
    assert defaults.ensure_converted("stand-in", _stand_in(calls)) == folder
    assert len(calls) == 2
    assert weights.read_bytes() == bytes(range(256)) * 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stand-in", "stand-in.lock"]


def test_a_failed_conversion_leaves_nothing_behind_and_stale_staging_is_removed(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("EAGLE_CACHE", str(tmp_path))
    (tmp_path / "stand-in.partial").mkdir()  # left by a process that died (old layout)
    (tmp_path / "stand-in.partial-x1y2").mkdir()  # left by a process that died

    def broken(out: Path) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        defaults.ensure_converted("stand-in", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stand-in.lock"]
    calls: list[Path] = []
    assert defaults.ensure_converted("stand-in", _stand_in(calls)).is_dir() and len(calls) == 1


_WORKER = textwrap.dedent(
    """
    import logging, os, sys, time
    from pathlib import Path
    from eagle.model import defaults

    logging.basicConfig(level=logging.INFO)  # the command decides what to show

    log, start = Path(sys.argv[1]), float(sys.argv[2])

    def convert(out):
        with open(log, "a") as stream:
            stream.write(f"{os.getpid()}\\n")
        time.sleep(1.0)  # long enough for the other process to arrive mid-conversion
        (out / "model.safetensors").write_bytes(bytes(range(256)) * 64)

    while time.time() < start:
        time.sleep(0.005)
    print(defaults.ensure_converted("stand-in", convert))
    """
)


def test_two_processes_converting_at_once_convert_once_and_both_succeed(tmp_path):
    cache, log = tmp_path / "cache", tmp_path / "conversions.log"
    env = os.environ | {"EAGLE_CACHE": str(cache)}
    start = time.time() + 3.0  # both start converting at the same moment
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(log), str(start)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [w.communicate(timeout=120) for w in workers]
    for worker, (out, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err
        assert out.strip() == str(cache / "stand-in")
    assert len(log.read_text().split()) == 1  # one conversion; the other process waited
    assert any("waiting" in err for _, err in results)
    assert defaults.check_conversion(cache / "stand-in") is None
    assert sorted(p.name for p in cache.iterdir()) == ["stand-in", "stand-in.lock"]


@pytest.mark.slow
@pytest.mark.real_model
def test_conversion_builds_a_loadable_chat_model_and_rebuilds_a_corrupt_cache(
    monkeypatch, tmp_path, smollm2_path
):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("EAGLE_CACHE", str(tmp_path))
    path = defaults.resolve_model_path("smollm2-135m-instruct")
    weights = tmp_path / "smollm2-135m-instruct" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # corrupt it
    assert defaults.resolve_model_path("smollm2-135m-instruct") == path  # rebuilt
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not torch.is_tensor(ids) else ids
    out = model.generate(ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
