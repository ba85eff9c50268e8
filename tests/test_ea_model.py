"""``EaModel.from_pretrained`` from directories, as users call it, including total_token=-1."""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import VOCAB, greedy_sequences, make_model, random_head
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from eagle.model.checkpoint import HeadCheckpointError, save_head
from eagle.model.ea_model import EaModel
from eagle.model.target import TargetModel


def _save_tokenizer(directory) -> None:
    vocab = {f"w{i}": i for i in range(VOCAB)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="w2", unk_token="w0")
    tokenizer.chat_template = "{% for m in messages %}w1 {{ m['content'] }} w2 {% endfor %}w3"
    tokenizer.save_pretrained(directory)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model = make_model("llama")
    model.save_pretrained(root / "target")
    _save_tokenizer(root / "target")
    target = TargetModel(model)
    save_head(random_head(target, "eagle3", draft_vocab=64), root / "head3")
    save_head(random_head(target, "eagle1"), root / "head1", safe_serialization=False)
    return root


def test_from_pretrained_with_the_original_signature(dirs):
    model = EaModel.from_pretrained(
        base_model_path=str(dirs / "target"),
        ea_model_path=str(dirs / "head3"),
        total_token=10,
        depth=3,
        top_k=4,
        torch_dtype=torch.float32,
    )
    model.eval()
    assert model.ea_layer.variant == "eagle3"
    assert model.eos_ids == {2}
    prompt = model.get_tokenizer()("w5 w9 w11 w4", return_tensors="pt").input_ids
    ids, new_token, _ = model.eagenerate(prompt, temperature=0.0, max_new_tokens=20, log=True)
    generated = ids[0, prompt.shape[1] :].tolist()
    full = greedy_sequences(model.target, prompt, 20)[0, prompt.shape[1] :].tolist()
    expected = full[: full.index(2) + 1] if 2 in full else full
    assert generated == expected and new_token == len(expected)


def test_use_eagle3_mismatch_and_bin_weights(dirs):
    model = EaModel.from_pretrained(str(dirs / "target"), str(dirs / "head1"), use_eagle3=False)
    assert model.ea_layer.variant == "eagle1"
    with pytest.raises(HeadCheckpointError, match="use_eagle3"):
        EaModel.from_pretrained(str(dirs / "target"), str(dirs / "head1"), use_eagle3=True)


def test_static_tree_preset(dirs):
    model = EaModel.from_pretrained(
        str(dirs / "target"), str(dirs / "head1"), tree_choices="mc_sim_7b_63"
    )
    assert model.tree.size == 26
    prompt = torch.tensor([[5, 9, 11, 4]])
    model.eos_ids = set()
    assert torch.equal(
        model.eagenerate(prompt, max_new_tokens=16), greedy_sequences(model.target, prompt, 16)
    )


def test_total_token_auto_measures_and_reports(dirs, caplog):
    caplog.set_level(logging.INFO, logger="eagle.model.autotune")
    model = EaModel.from_pretrained(
        str(dirs / "target"), str(dirs / "head1"), total_token=-1, depth=3, top_k=3
    )
    choice = model.tree_choice
    assert choice is not None and model.tree.total_token == choice.total_token
    # a depth-3, top-3 tree has at most 1 + 3 + 3 * 9 = 31 nodes
    assert [row[0] for row in choice.rows] == [2, 3, 4, 6, 8, 12, 16, 24]
    assert choice.summary() in caplog.messages


def test_hub_keywords_reach_the_tokenizer_and_the_head_download(dirs, monkeypatch):
    """revision/token/cache_dir/trust_remote_code go to the tokenizer too; the head's hub
    download gets the keywords that are not about the target's repository (not revision)."""
    import huggingface_hub
    from transformers import AutoTokenizer

    seen: dict[str, dict] = {}
    real_tokenizer = AutoTokenizer.from_pretrained

    def tokenizer(path, **kwargs):
        seen["tokenizer"] = kwargs
        return real_tokenizer(path)

    def download(repo_id, **kwargs):
        seen["head"] = {"repo_id": repo_id, **kwargs}
        return str(dirs / "head3")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", tokenizer)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    hub = {"revision": "main", "token": "hf_x", "cache_dir": str(dirs / "cache")}
    EaModel.from_pretrained(
        str(dirs / "target"), "someone/some-head", total_token=4, depth=2, top_k=2,
        trust_remote_code=False, **hub,
    )  # fmt: skip
    assert seen["tokenizer"] == {**hub, "trust_remote_code": False}
    assert seen["head"]["repo_id"] == "someone/some-head"
    assert seen["head"]["token"] == "hf_x" and seen["head"]["cache_dir"] == hub["cache_dir"]
    assert "revision" not in seen["head"] and "trust_remote_code" not in seen["head"]
