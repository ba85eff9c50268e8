"""Where the time of one decode iteration goes: draft, verify, everything else.

    python -m eagle.evaluation.profile_steps --dtype bfloat16                 # random ~124M Llama
    python -m eagle.evaluation.profile_steps --base-model-path M --ea-model-path H

Prints milliseconds per plain decoding step (``naivegenerate``) and, for ``eagenerate``, the
mean time per iteration split into drafting (head catch-up and tree growth), verification
(the target's tree forward) and the rest (acceptance, cache compaction, bookkeeping), measured
in the same process. Without paths it builds a random Llama target (hidden 768, 12 layers,
vocab 32000) and a random EAGLE-1 head, so acceptance is near zero: the split, not the speedup,
is what this measures.
"""

from __future__ import annotations

import argparse
import time

import torch

from eagle.evaluation.methods import DTYPES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base-model-path", help="target model (default: a random ~124M Llama)")
    p.add_argument("--ea-model-path", help="draft head (default: a random EAGLE-1 head)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16", help="model dtype")
    p.add_argument("--total-token", type=int, default=60, help="tree nodes per step incl. root")
    p.add_argument("--depth", type=int, default=7, help="tree expansion steps")
    p.add_argument("--top-k", type=int, default=10, help="branching per level")
    p.add_argument("--prompt-tokens", type=int, default=128, help="random prompt length")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens to generate per run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each method")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args(argv)


def random_llama(dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from eagle.model.draft_head import HeadConfig, TargetParts, build_head
    from eagle.model.ea_model import EaModel
    from eagle.model.target import TargetModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=768, intermediate_size=2560, num_hidden_layers=12,
        num_attention_heads=12, num_key_value_heads=12, tie_word_embeddings=True,
    )  # fmt: skip
    target = TargetModel(AutoModelForCausalLM.from_config(config).to(dtype))
    head_config = HeadConfig(
        variant="eagle1", hidden_size=768, intermediate_size=2560, num_attention_heads=12,
        num_key_value_heads=12, vocab_size=32000,
    )  # fmt: skip
    head = build_head(head_config, TargetParts(target.embed_tokens, target.lm_head), False)
    params = sum(p.numel() for p in target.model.parameters())
    print(f"random Llama target: {params / 1e6:.1f}M parameters, {dtype}")
    return EaModel(target, head.to(dtype).eval(), None, eos_ids=set())


def main(argv: list[str] | None = None) -> None:
    from eagle.model.draft import DynamicTree
    from eagle.model.ea_model import EaModel
    from eagle.model.generate import SectionTimer

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    if args.base_model_path:
        model = EaModel.from_pretrained(args.base_model_path, args.ea_model_path, dtype=dtype)
    else:
        model = random_llama(dtype)
    model.set_tree(DynamicTree(args.total_token, args.depth, args.top_k))
    vocab = model.target.vocab_size
    prompt = torch.randint(
        0, vocab, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1)
    )
    run = dict(max_new_tokens=args.new_tokens, max_length=args.prompt_tokens + args.new_tokens + 1)
    for use_draft in (False, True):  # warm-up
        list(model.generate_steps(prompt, max_new_tokens=8, use_draft=use_draft))
    naive_seconds, eagle = 0.0, SectionTimer()
    naive_steps = eagle_steps = eagle_tokens = 0
    for _ in range(args.repeats):  # interleaved, same process
        start = time.perf_counter()
        steps = list(model.generate_steps(prompt, use_draft=False, **run))
        naive_seconds += time.perf_counter() - start - _prefill_seconds(model, prompt)
        naive_steps += len(steps) - 1
        steps = list(model.generate_steps(prompt, use_draft=True, timer=eagle, **run))
        eagle_steps += len(steps) - 1
        eagle_tokens += steps[-1].new_tokens - 1
    print(f"tree: total_token={args.total_token} depth={args.depth} top_k={args.top_k}")
    print(f"naivegenerate: {1e3 * naive_seconds / naive_steps:.2f} ms per decode step")
    prefill = _prefill_seconds(model, prompt) * args.repeats
    parts = dict(eagle.seconds)
    parts["verify"] -= prefill  # report per-iteration time: the prefill is not an iteration
    total = sum(parts.values())
    print(
        f"eagenerate: {1e3 * total / eagle_steps:.2f} ms per iteration, "
        f"{eagle_tokens / eagle_steps:.2f} tokens per iteration"
    )
    for name in ("draft", "verify", "other"):
        share = parts.get(name, 0.0)
        print(f"  {name:6s} {1e3 * share / eagle_steps:8.2f} ms  {100 * share / total:5.1f}%")


def _prefill_seconds(model, prompt: torch.Tensor) -> float:
    with torch.inference_mode():
        cache = model.target.new_cache()
        start = time.perf_counter()
        model.target.prefill(prompt, cache, None)
        return time.perf_counter() - start


if __name__ == "__main__":
    main()
