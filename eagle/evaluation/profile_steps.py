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

With ``--lookup`` (or any ``--lookup-*`` flag) two more methods are timed in the same rounds:
EAGLE with drafts from the context (``eagle.model.lookup``), and EAGLE with the lookup's whole
work done every step (index update, matching, merge into the tree) and its branches thrown
away. The second decodes exactly plain EAGLE's trees, tokens and steps, so its time against
plain EAGLE's is what the switched-on lookup costs a step that gains nothing from it: an upper
bound on a step where nothing matches (that step skips the merge). It is the "no match"
measurement even where the model repeats itself, which a small model does on most prompts,
random ones included. The lookup's own work per step is then timed alone by replaying the
tokens of the last run.

``--prompt random-tokens`` (default) times one prompt of ``--prompt-tokens`` random token ids;
``--prompt random-words`` times the first ``--prompts`` of the 16 ``random_words`` benchmark
prompts (``eagle.benchmarks``) in the model's chat template, each method in turn per prompt.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from eagle.model.generate import GenerationConfig, SectionTimer, decode
from eagle.model.loading import ModelSpec, add_model_flags, checked_model_spec, load_ea_model
from eagle.model.lookup import (
    ContextIndex,
    ContextProposer,
    LookupSettings,
    LookupState,
    merge_chains,
)
from eagle.model.tree import TreeBuffers, build_tree

PROMPTS = ("random-tokens", "random-words")


class DiscardedLookup(ContextProposer):
    """A ``ContextProposer`` that does the lookup's work on top of ``base`` and drafts ``base``'s
    tree.

    Each step: ``base``'s tree, the context index updated, its continuations matched and merged
    into a copy of the tree, which is then dropped. Tokens and steps are ``base``'s alone.
    """

    @property
    def max_tree_depth(self) -> int:
        return self.base.max_tree_depth

    def propose(self, state: LookupState, features, next_tokens) -> TreeBuffers:
        tree = self.base.propose(state.base, features, next_tokens)
        self.add_context(state.index, tree, next_tokens)  # the work is done, the branches dropped
        return tree


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, ModelSpec]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_flags(p, lookup=True)
    p.add_argument(
        "--random-target",
        action="store_true",
        help="profile a random ~124M Llama and a random EAGLE-1 head instead of the paths",
    )
    p.add_argument(
        "--prompt",
        choices=PROMPTS,
        default=PROMPTS[0],
        help="random token ids (one prompt) or the random_words benchmark's prompts",
    )
    p.add_argument("--prompts", type=int, default=16, help="random-words prompts to time")
    p.add_argument("--prompt-tokens", type=int, default=128, help="random prompt length")
    p.add_argument("--new-tokens", type=int, default=64, help="tokens to generate per run")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each method")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)
    for name in ("prompts", "prompt_tokens", "new_tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer")
    if args.prompt == "random-words" and args.random_target:
        p.error("--prompt random-words needs a tokenizer: drop --random-target")
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


def prompts(args: argparse.Namespace, model) -> list[torch.Tensor]:
    """The prompts to time, as [1, L] ids on the target's device."""
    device = model.target.device
    if args.prompt == "random-tokens":
        generator = torch.Generator().manual_seed(1)
        ids = torch.randint(
            0, model.target.vocab_size, (1, args.prompt_tokens), generator=generator
        )
        return [ids.to(device)]
    from eagle.benchmarks import load_questions
    from eagle.chat.templates import prompt_ids, resolve_template

    template = resolve_template("auto", model.tokenizer)
    questions = load_questions("random_words", end=args.prompts)
    return [
        torch.tensor([prompt_ids(model.tokenizer, template, [{"role": "user", "content": q.turns[0]}])],
                     device=device)
        for q in questions
    ]  # fmt: skip


@dataclasses.dataclass
class Tally:
    """One method's timed sections, iterations (target steps after the prefill) and tokens."""

    timer: SectionTimer
    iterations: int = 0
    tokens: int = 0  # generated after the prefill's token
    outputs: list = dataclasses.field(default_factory=list)
    last_steps: list = dataclasses.field(default_factory=list)

    def add(self, steps: list) -> None:
        self.iterations += len(steps) - 1
        self.tokens += steps[-1].new_tokens - 1
        self.outputs.append((steps[-1].ids[0].tolist(), len(steps)))  # tokens, target steps
        self.last_steps = steps

    @property
    def seconds(self) -> float:  # the prefill, timed on its own, is no iteration
        return sum(v for k, v in self.timer.seconds.items() if k != "prefill")


def main(argv: list[str] | None = None) -> None:
    args, spec = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_llama(spec) if args.random_target else load_ea_model(spec)
    inputs = prompts(args, model)
    longest = max(ids.shape[1] for ids in inputs)
    run = GenerationConfig(max_new_tokens=args.new_tokens, max_length=longest + args.new_tokens + 1)
    for use_draft in (False, True):  # warm-up
        list(model.generate_steps(inputs[0], use_draft=use_draft, max_new_tokens=8))
    lookup = spec.lookup
    names = ["naive", "eagle"] + (["lookup", "discarded"] if lookup is not None else [])
    tallies = {name: Tally(SectionTimer()) for name in names}
    off = dataclasses.replace(run, lookup=False)
    for _ in range(args.repeats):  # interleaved, same process
        for ids in inputs:
            for name, tally in tallies.items():
                if name == "discarded" and lookup is not None:
                    proposer = DiscardedLookup(model.drafter, lookup)
                    steps = decode(
                        model.target, proposer, ids, off, model.eos_ids, None, tally.timer
                    )
                else:
                    config = dataclasses.replace(run, lookup=lookup) if name == "lookup" else off
                    steps = model.generate_steps(
                        ids, use_draft=name != "naive", timer=tally.timer, config=config
                    )
                tally.add(list(steps))
    print(f"tree: {model.tree}; {len(inputs)} prompt(s) ({args.prompt}) x {args.repeats} runs")
    naive = tallies["naive"]
    print(f"naivegenerate: {1e3 * naive.seconds / naive.iterations:.2f} ms per decode step")
    eagle = tallies["eagle"]
    parts = {k: v for k, v in eagle.timer.seconds.items() if k != "prefill"}
    print(
        f"eagenerate: {1e3 * eagle.seconds / eagle.iterations:.2f} ms per iteration, "
        f"{eagle.tokens / eagle.iterations:.2f} tokens per iteration"
    )
    for name in ("draft", "verify", "other"):
        share = parts.get(name, 0.0)
        print(
            f"  {name:6s} {1e3 * share / eagle.iterations:8.2f} ms  "
            f"{100 * share / eagle.seconds:5.1f}%"
        )
    if lookup is not None:
        report_lookup(lookup, tallies, args.repeats)


def report_lookup(settings: LookupSettings, tallies: dict, repeats: int) -> None:
    """EAGLE + lookup and EAGLE + discarded lookup against EAGLE, and the lookup's own cost."""
    eagle, both, discarded = tallies["eagle"], tallies["lookup"], tallies["discarded"]
    per_token = eagle.seconds / eagle.tokens
    accepted = sum(int(s.accepted_from_context.sum()) for s in both.last_steps[1:]
                   if s.accepted_from_context is not None)  # fmt: skip
    print(
        f"eagenerate + lookup ({settings}): {1e3 * both.seconds / both.iterations:.2f} ms per "
        f"iteration, {both.tokens / both.iterations:.2f} tokens per iteration, "
        f"{accepted} tokens accepted from the context in the last run; "
        f"time per token {both.seconds / both.tokens / per_token:.3f}x plain EAGLE's"
    )
    same = discarded.outputs == eagle.outputs
    print(
        f"eagenerate + lookup with its drafts discarded (the no-match cost): "
        f"{1e3 * discarded.seconds / discarded.iterations:.2f} ms per iteration; "
        f"time per token {discarded.seconds / discarded.tokens / per_token:.3f}x plain EAGLE's; "
        f"tokens and steps {'identical to' if same else 'DIFFERENT from'} plain EAGLE's"
    )
    steps = both.last_steps
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
