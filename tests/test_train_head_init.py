"""``head.lm_head_init``: an EAGLE-3 head may start its lm_head from the target's rows."""

from __future__ import annotations

import pytest
import torch
from helpers import greedy_samples, make_target, write_feature_data

from eagle.ge_data.feature_format import read_manifest, read_vocab
from eagle.train.build import make_head, target_parts
from eagle.train.config import ConfigError, config_from_dict


@pytest.mark.parametrize("draft_vocab", [24, None], ids=["reduced-vocab", "full-vocab"])
def test_target_init_copies_the_draft_vocabulary_rows(tmp_path, draft_vocab):
    target = make_target("llama")
    samples = greedy_samples(target, 4, prompt_len=3, new_tokens=8, seed=2)
    write_feature_data(target, tmp_path, samples, draft_vocab_size=draft_vocab or target.vocab_size)
    manifest = read_manifest(tmp_path)
    parts = target_parts(target.embed_tokens, target.lm_head)
    heads = {}
    for init in ("random", "target"):
        config = config_from_dict({"variant": "eagle3", "head": {"lm_head_init": init}})
        torch.manual_seed(0)
        heads[init] = make_head(config, target.config, parts, manifest, read_vocab(manifest))
    head = heads["target"]
    ids = torch.arange(head.d2t.shape[0]) + head.d2t if head.reduced_vocab else slice(None)
    assert torch.equal(head.lm_head.weight, target.lm_head.weight[ids])
    assert not torch.equal(heads["random"].lm_head.weight, head.lm_head.weight)
    assert torch.equal(heads["random"].fc.weight, head.fc.weight)  # nothing else changes


def test_unknown_init_is_named():
    with pytest.raises(ConfigError, match=r"head\.lm_head_init"):
        config_from_dict({"variant": "eagle3", "head": {"lm_head_init": "zeros"}})
