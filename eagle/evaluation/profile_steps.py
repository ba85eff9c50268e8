"""Where the time of one decode iteration goes: draft, verify, everything else.

    python -m eagle.evaluation.profile_steps                    # built-in SmolLM2 and its head
    python -m eagle.evaluation.profile_steps --base-model-path M --ea-model-path H
    python -m eagle.evaluation.profile_steps --random-target    # random ~124M Llama, EAGLE-1 head

Prints milliseconds per plain decoding step (``naivegenerate``) and, for ``eagenerate``, the
mean time per iteration split into drafting (head catch-up and tree growth), verification
(the target's tree forward) and the rest (acceptance, cache compaction, bookkeeping), measured
in the same process; the prefill is the decode loop's own timed section, left out of both.
The models come from the flags every command shares
(``eagle.model.loading``). ``--random-target`` builds a random Llama target (hidden 768,
12 layers, vocab 32000) and a random EAGLE-1 head instead, so acceptance is near zero: the
split, not the speedup, is what it measures.

With ``--lookup`` (or any ``--lookup-*`` flag) a third method is timed in the same rounds:
EAGLE with drafts from the context (``eagle.model.lookup``). The random prompt makes a match
unlikely, so its speed against plain EAGLE is the cost of the switched-on lookup when nothing
matches; the lookup's own work per step (index update, matching, merge into the tree) is then
timed alone by replaying the same tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from eagle.model.loading import ModelSpec, add_model_flags, checked_model_spec, load_ea_model


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, ModelSpec]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_flags(p, lookup=True)
    p.add_argument(
        "--random-target",
        action="store_true",
        help="profile a random ~124M Llama and a random EAGLE-1 head instead of the paths",
    )
    p.add_argument("--prompt-tokens", type=int, default=128, help="random prompt length")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens to generate per run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each method")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    return args, checked_model_spec(p, args, need_head=not args.random_target)


def random_llama(spec: ModelSpec):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from eagle.model.draft import DynamicTree
    from eagle.model.draft_head import HeadConfig, TargetParts, build_head
    from eagle.model.ea_model import EaModel
    from eagle.model.target import TargetModel

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32000, hidden_size=768, intermediate_size=2560, num_hidden_layers=12,
        num_attention_heads=12, num_key_value_heads=12, tie_word_embeddings=True,
    )  # fmt: skip
    dtype = spec.torch_dtype
    target = TargetModel(AutoModelForCausalLM.from_config(config).to(spec.device, dtype))
    head_config = HeadConfig(
        variant="eagle1", hidden_size=768, intermediate_size=2560, num_attention_heads=12,
        num_key_value_heads=12, vocab_size=32000,
    )  # fmt: skip
    head = build_head(head_config, TargetParts(target.embed_tokens, target.lm_head), False)
    params = sum(p.numel() for p in target.model.parameters())
    print(f"random Llama target: {params / 1e6:.1f}M parameters, {dtype}")
    tree = DynamicTree(**spec.tree)
    return EaModel(target, head.to(spec.device, dtype).eval(), None, tree, eos_ids=set())


def main(argv: list[str] | None = None) -> None:
    from eagle.model.generate import GenerationConfig, SectionTimer

    args, spec = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_llama(spec) if args.random_target else load_ea_model(spec)
    vocab = model.target.vocab_size
    prompt = torch.randint(
        0, vocab, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1)
    ).to(model.target.device)
    run = GenerationConfig(
        max_new_tokens=args.new_tokens, max_length=args.prompt_tokens + args.new_tokens + 1
    )
    for use_draft in (False, True):  # warm-up
        list(model.generate_steps(prompt, use_draft=use_draft, max_new_tokens=8))
    naive, eagle, both = SectionTimer(), SectionTimer(), SectionTimer()
    naive_steps = eagle_steps = eagle_tokens = 0
    lookup_steps: list = []
    off = dataclasses.replace(run, lookup=False)
    for _ in range(args.repeats):  # interleaved, same process
        steps = list(model.generate_steps(prompt, use_draft=False, timer=naive, config=off))
        naive_steps += len(steps) - 1
        steps = list(model.generate_steps(prompt, use_draft=True, timer=eagle, config=off))
        eagle_steps += len(steps) - 1
        eagle_tokens += steps[-1].new_tokens - 1
        if spec.lookup is not None:
            on = dataclasses.replace(run, lookup=spec.lookup)
            lookup_steps = list(model.generate_steps(prompt, use_draft=True, timer=both, config=on))
    print(f"tree: {model.tree}")
    naive_seconds = sum(naive.seconds.values()) - naive.seconds["prefill"]
    print(f"naivegenerate: {1e3 * naive_seconds / naive_steps:.2f} ms per decode step")
    parts = dict(eagle.seconds)
    del parts["prefill"]  # per-iteration time: the prefill, timed on its own, is no iteration
    total = sum(parts.values())
    print(
        f"eagenerate: {1e3 * total / eagle_steps:.2f} ms per iteration, "
        f"{eagle_tokens / eagle_steps:.2f} tokens per iteration"
    )
    for name in ("draft", "verify", "other"):
        share = parts.get(name, 0.0)
        print(f"  {name:6s} {1e3 * share / eagle_steps:8.2f} ms  {100 * share / total:5.1f}%")
    if spec.lookup is not None:
        report_lookup(spec.lookup, both, lookup_steps, args.repeats, total / eagle_steps)


def report_lookup(settings, timer, steps: list, repeats: int, eagle_iteration: float) -> None:
    """EAGLE + lookup against EAGLE (per iteration), and the lookup's own cost per step."""
    from eagle.model.lookup import ContextIndex, merge_chains
    from eagle.model.tree import build_tree

    iterations = repeats * (len(steps) - 1)
    seconds = sum(v for k, v in timer.seconds.items() if k != "prefill")
    accepted = sum(int(s.accepted_from_context.sum()) for s in steps[1:]
                   if s.accepted_from_context is not None)  # fmt: skip
    print(
        f"eagenerate + lookup ({settings}): {1e3 * seconds / iterations:.2f} ms per iteration, "
        f"{(steps[-1].new_tokens - 1) / (len(steps) - 1):.2f} tokens per iteration, "
        f"{accepted} tokens accepted from the context in the last run; "
        f"iteration time {seconds / iterations / eagle_iteration:.3f}x plain EAGLE's"
    )
    ids = steps[-1].ids[0].tolist()
    prompt = len(ids) - steps[-1].new_tokens
    cuts = [prompt + s.new_tokens for s in steps]  # the ids known at each step
    root = build_tree(torch.tensor(ids[:1]), torch.tensor([-1]), 0)
    start = time.perf_counter()
    for _ in range(repeats):
        index, done = ContextIndex(settings), 1
        for cut in cuts[:-1]:
            index.extend(ids[done:cut])
            done = cut
            chains = index.continuations()
            if chains:
                merge_chains(root, chains)
    per_step = (time.perf_counter() - start) / (repeats * (len(cuts) - 1))
    print(f"  lookup alone (index update, matching, merge): {1e6 * per_step:.1f} us per step")


if __name__ == "__main__":
    main()
