"""The CPU guarantees, checked again on CUDA (``pytest -m gpu``; skipped without a GPU).

The models are the CPU tests' own (``test_generate``: tiny random targets, heads fitted to the
target's continuation on the CPU), copied to the GPU, so a failure here is the device's
arithmetic or a device mismatch in the code, not a different test. Asserted in fp32: EAGLE's
greedy output equals transformers' greedy ``generate`` on the same GPU, for two architectures,
both head variants, dynamic and static trees; sampled tokens follow the target distribution.
Reported, not asserted, in bf16: how many generated tokens agree with plain decoding (bf16
rounding differs between a 1-token step and a tree forward, see README "stack facts").
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from helpers import greedy_sequences
from test_generate import (
    NEW_TOKENS,
    TREES,
    _head,
    _prompt,
    _target,
    assert_sampling_follows_the_target,
)

from eagle.model.ea_model import EaModel

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m gpu)"),
]
ARCHS = ["llama", "qwen3"]


@functools.cache
def _on_gpu(arch: str, variant: str, fitted: bool, dtype: torch.dtype = torch.float32):
    """The CPU test's target and head, copied together (the head borrows the target's
    embedding and lm_head) and moved to the GPU."""
    target, head = copy.deepcopy((_target(arch), _head(arch, variant, fitted)))
    target.model.to("cuda", dtype)
    return target, head.to("cuda", dtype)


@pytest.mark.parametrize("fitted", [False, True], ids=["random-head", "fitted-head"])
@pytest.mark.parametrize("tree", sorted(TREES))
@pytest.mark.parametrize("variant", ["eagle1", "eagle3"])
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_equals_plain_decoding_on_cuda(arch, variant, tree, fitted):
    target, head = _on_gpu(arch, variant, fitted)
    model = EaModel(target, head, None, TREES[tree], eos_ids=set())
    prompt = _prompt(0).cuda()
    reference = greedy_sequences(target, prompt, NEW_TOKENS)
    ids, new_tokens, idx = model.eagenerate(prompt, max_new_tokens=NEW_TOKENS, log=True)
    assert ids.device.type == "cuda"
    assert torch.equal(ids, reference)
    if fitted:
        assert new_tokens / (idx + 1) > 2.0  # acceptance and cache compaction really ran
    assert torch.equal(model.naivegenerate(prompt, max_new_tokens=NEW_TOKENS), reference)


def test_sampling_follows_the_target_distribution_on_cuda():
    target, head = _on_gpu("llama", "eagle1", True)
    model = EaModel(target, head, None, TREES["dynamic"], eos_ids=set())
    torch.manual_seed(0)  # the global CUDA generator: generator=None
    assert_sampling_follows_the_target(model, _prompt(0), None)


def test_sampling_takes_a_cuda_generator():
    target, head = _on_gpu("llama", "eagle1", True)
    model = EaModel(target, head, None, TREES["dynamic"], eos_ids=set())
    runs = []
    for _ in range(2):
        generator = torch.Generator("cuda").manual_seed(3)
        ids = model.eagenerate(_prompt(0).cuda(), 1.0, max_new_tokens=16, generator=generator)
        runs.append(ids)
    assert torch.equal(runs[0], runs[1])  # the same seed gives the same sample


@pytest.mark.parametrize("variant", ["eagle1", "eagle3"])
@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_agreement_with_plain_decoding_is_reported(arch, variant):
    target, head = _on_gpu(arch, variant, True, torch.bfloat16)
    model = EaModel(target, head, None, TREES["dynamic"], eos_ids=set())
    prompt = _prompt(0).cuda()
    eagle = model.eagenerate(prompt, max_new_tokens=NEW_TOKENS)[0, prompt.shape[1] :]
    plain = model.naivegenerate(prompt, max_new_tokens=NEW_TOKENS)[0, prompt.shape[1] :]
    same = int((eagle == plain).cumprod(0).sum())
    print(f"bf16 {arch}/{variant}: first {same} of {NEW_TOKENS} tokens agree with plain decoding")
    assert eagle.shape == plain.shape
