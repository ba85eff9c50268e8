"""The main job: answer a prompt with EAGLE and show the speedup, measured in the same run.

    python -m eagle                                  # built-in SmolLM2 target and its shipped head
    python -m eagle --prompt "Explain recursion to a child."
    python -m eagle --base-model-path M --ea-model-path H --dtype bfloat16

Loads the target and the head (the first run converts the built-in target once and says so),
warms up, then generates the answer with plain decoding (``naivegenerate``) and with EAGLE
(``eagenerate``), interleaved ``--repeats`` times in this process, and prints the answer, the
tokens/s of both, the speedup, the mean acceptance length tau, and whether the two outputs agree.
Every flag is checked before anything is loaded (exit status 2 naming the flag): numbers finite
and in range, ``--top-k`` within the head's draft vocabulary, ``--device`` present here.
"""

from __future__ import annotations

import argparse
import sys
import time

from eagle.input_checks import NON_NEGATIVE, POSITIVE_INT, check_flags
from eagle.model.generate import GenerationConfig
from eagle.model.loading import ModelSpec, add_model_flags, checked_model_spec, load_ea_model
from eagle.model.verify import SamplingParams

# SmolLM2-135M answers this one sensibly and without looping, greedy in fp32 and bf16 (174 and 200
# tokens); its greedy story about "a robot who learns to paint" repeats one sentence over and over.
DEFAULT_PROMPT = "What are the main causes of climate change?"
FLAG_BOUNDS = {
    "--max-new-tokens": POSITIVE_INT,
    "--temperature": NON_NEGATIVE,
    "--repeats": POSITIVE_INT,
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eagle", description=__doc__.split("\n")[0])
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="the user message to answer")
    add_model_flags(p, lookup=True)
    p.add_argument("--max-new-tokens", type=int, default=256, help="tokens to generate (>= 1)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (finite, >= 0)")
    p.add_argument("--repeats", type=int, default=1, help="timed runs of each method (>= 1)")
    return p


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, ModelSpec]:
    """The flags and the models they name, each checked (exit status 2 naming the flag) before
    anything is loaded."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_flags(parser, args, FLAG_BOUNDS)
    return args, checked_model_spec(parser, args)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load(spec: ModelSpec):
    say(f"loading target {spec.base_model_path} and head {spec.ea_model_path} ({spec.dtype}) ...")
    start = time.perf_counter()
    model = load_ea_model(spec)
    lookup = f"; drafts from the context: {model.lookup}" if model.lookup else ""
    say(f"loaded in {time.perf_counter() - start:.1f} s; tree {model.tree}{lookup}")
    return model


def timed(model, input_ids, args, use_draft: bool) -> tuple:
    """(ids, new tokens, target steps, seconds) of one generation."""
    config = GenerationConfig(SamplingParams(args.temperature), args.max_new_tokens)
    start = time.perf_counter()
    *_, last = model.generate_steps(input_ids, use_draft=use_draft, config=config)
    return last.ids, last.new_tokens, last.steps, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    args, spec = parse_args(argv)
    model = load(spec)
    try:
        run(model, args)
    except ValueError as error:  # e.g. a prompt that leaves no room for an answer
        raise SystemExit(f"python -m eagle: {error}") from error


def run(model, args: argparse.Namespace) -> None:
    """Warm up, time both methods ``--repeats`` times, print the answer and the report."""
    tokenizer = model.tokenizer
    messages = [{"role": "user", "content": args.prompt}]
    input_ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"].to(model.target.device)
    say("warming up ...")
    model.eagenerate(input_ids, max_new_tokens=16)
    model.naivegenerate(input_ids, max_new_tokens=16)
    totals = {"plain": [0, 0, 0.0], "eagle": [0, 0, 0.0]}  # tokens, steps, seconds
    for repeat in range(args.repeats):
        say(f"run {repeat + 1}/{args.repeats}: plain decoding, then EAGLE ...")
        plain_ids, *plain = timed(model, input_ids, args, use_draft=False)
        eagle_ids, *eagle = timed(model, input_ids, args, use_draft=True)
        for key, timing in (("plain", plain), ("eagle", eagle)):
            totals[key] = [a + b for a, b in zip(totals[key], timing, strict=True)]
    prompt_length = input_ids.shape[1]
    print(tokenizer.decode(eagle_ids[0, prompt_length:], skip_special_tokens=True).strip())
    print()
    report(totals, plain_ids[0, prompt_length:].tolist(), eagle_ids[0, prompt_length:].tolist())


def report(totals: dict, plain: list[int], eagle: list[int]) -> None:
    plain_speed = totals["plain"][0] / totals["plain"][2]
    eagle_speed = totals["eagle"][0] / totals["eagle"][2]
    mismatch = [i for i, (a, b) in enumerate(zip(plain, eagle, strict=False)) if a != b]
    print(f"plain decoding : {plain_speed:7.1f} tokens/s")
    print(f"EAGLE          : {eagle_speed:7.1f} tokens/s")
    print(f"speedup        : {eagle_speed / plain_speed:7.2f}x")
    print(f"tau            : {totals['eagle'][0] / totals['eagle'][1]:7.2f} tokens per target step")
    if plain == eagle:
        agreement = f"identical ({len(eagle)} tokens)"
    else:
        first = mismatch[0] if mismatch else min(len(plain), len(eagle))
        agreement = f"first {first} of {len(eagle)} tokens identical (bf16 rounding can differ)"
    print(f"outputs        : {agreement}, plain vs EAGLE")


if __name__ == "__main__":
    main()
