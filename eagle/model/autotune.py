"""``total_token=-1``: choose the dynamic tree size from measurements on the current device.

Two measurements, both on the loaded models:

1. Verification cost: the time of one target forward of N tree nodes after a fixed prefix, for
   each candidate N (the cost grows slowly up to some N and fast after, and where depends on the
   device: ~8 nodes cost one token on a 2-core CPU, ~60 on a large GPU).
2. Acceptance: one greedy calibration generation with the largest candidate tree. Because the
   best M drafted nodes of an EAGLE-2 tree are exactly its nodes of score rank < M, the accepted
   path of the large tree tells how many tokens every smaller tree would have accepted.

The choice maximises predicted tokens per second = (1 + accepted(N)) / (draft + verify(N) +
other), with draft and other times measured in the same calibration run. The measurements are
returned (``TreeChoice``, whose ``summary`` is the table) and logged at INFO on
``eagle.model.autotune``; the command decides what to show.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from eagle.model.draft import DynamicTree
from eagle.model.generate import GenerationConfig, SectionTimer

logger = logging.getLogger(__name__)

CANDIDATES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
CALIBRATION_QUESTION = "Explain in a few sentences why the sky looks blue during the day."


@dataclass(frozen=True)
class TreeChoice:
    total_token: int
    rows: tuple[tuple[int, float, float, float], ...]  # N, verify ms, tokens/step, tokens/s
    plain_tokens_per_second: float

    def summary(self) -> str:
        best = next(r for r in self.rows if r[0] == self.total_token)
        lines = [
            f"total_token=-1: chose total_token={self.total_token} "
            f"(predicted {best[3]:.1f} tokens/s, {best[2]:.2f} tokens per step; "
            f"plain decoding {self.plain_tokens_per_second:.1f} tokens/s)",
            "    N   verify ms   tokens/step   tokens/s",
        ]
        lines += [
            f"  {n:3d}   {ms:9.2f}   {tau:11.2f}   {tps:8.1f}" for n, ms, tau, tps in self.rows
        ]
        return "\n".join(lines)


@torch.inference_mode()
def measure_verify_seconds(
    target, sizes: tuple[int, ...], context: int = 128, repeats: int = 5
) -> dict[int, float]:
    """Median seconds of one forward of N chain-shaped tree nodes after ``context`` tokens."""
    device = target.device
    generator = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, target.vocab_size, (1, context), generator=generator).to(device)
    cache = target.new_cache()
    target.prefill(prefix, cache, None)
    seconds = {}
    for n in sizes:
        tokens = torch.randint(0, target.vocab_size, (n,), generator=generator).to(device)
        depth = torch.arange(n, device=device)
        mask = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        times = []
        for _ in range(repeats + 1):  # the first run warms up
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            target.forward_tree(tokens, depth, mask, cache, context, None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
            target.keep(cache, context, depth[:0])
        seconds[n] = sorted(times[1:])[len(times[1:]) // 2]
    return seconds


def calibration_prompt(model) -> torch.Tensor:
    tokenizer = model.tokenizer
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": CALIBRATION_QUESTION}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids
    if tokenizer is not None:
        return tokenizer(CALIBRATION_QUESTION, return_tensors="pt").input_ids
    return (torch.arange(1, 17) % model.target.vocab_size)[None]


def choose_total_token(model, depth: int, top_k: int, new_tokens: int = 64) -> TreeChoice:
    """Measure, predict and pick; the table is logged at INFO. The model is not changed: the
    calibration generation brings its tree with the call."""
    largest = min(max(CANDIDATES), top_k + depth * top_k * top_k + 1)
    sizes = tuple(n for n in CANDIDATES if n <= largest)
    verify = measure_verify_seconds(model.target, (1, *sizes))
    tree = DynamicTree(total_token=largest, depth=depth, top_k=top_k)
    config = GenerationConfig(max_new_tokens=new_tokens, tree=tree)
    timer = SectionTimer()
    ranks = []
    for step in model.generate_steps(calibration_prompt(model), config=config, timer=timer):
        if step.accepted_ranks is not None:
            ranks.append(step.accepted_ranks.cpu())
    steps = max(len(ranks), 1)
    overhead = (timer.seconds.get("draft", 0.0) + timer.seconds.get("other", 0.0)) / steps
    rows = []
    for n in sizes:
        accepted = sum(int((r < n - 1).sum()) for r in ranks) / steps
        step_seconds = overhead + verify[n]
        rows.append((n, verify[n] * 1e3, 1 + accepted, (1 + accepted) / step_seconds))
    best = max(rows, key=lambda r: r[3])
    choice = TreeChoice(best[0], tuple(rows), 1.0 / verify[1])
    logger.info("%s", choice.summary())
    return choice
