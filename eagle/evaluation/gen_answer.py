"""Answer generation for speed evaluation: one implementation behind every entry point.

``gen_ea_answer`` and ``gen_baseline_answer`` (and the per-model aliases, the original's script
names) are this command line with the defaults of one row of ``SCRIPTS``: the method, the chat
template, the system prompt and the tree the original's script of that name used (read from
its source, cited per row); the loop itself is ``eagle.evaluation.runner``. Several
``--method`` values load the models once and run interleaved, each into its own answer file.
Every answer line records the run's settings (``run_settings`` and the method's own), so a
file is resumed only with the same flags. Flag errors (every number finite and in range,
``--model-id`` a plain name, so that default answer files stay inside ``outputs/``), malformed
question files, and answer files that cannot be resumed with these flags, are reported before
any model is loaded (exit status 2, naming the flag or the file and line).

The original EAGLE's evaluation command lines run unchanged (SafeAILab/EAGLE README, Evaluation:
``gen_ea_answer_llama3chat ... --use_eagle3``): ``--use_eagle3``/``--use-eagle3`` and
``--tree-choices`` keep their meaning (``eagle.model.loading``), and its GPU placement flags
(``--num-gpus-per-model``, ``--num-gpus-total``, ``--max-gpu-memory``, ``--load-in-8bit``) are
accepted and reported as ignored on stderr.

Example (then compare with ``python -m eagle.evaluation.speed``)::

    python -m eagle.evaluation.gen_ea_answer --base-model-path TARGET --ea-model-path HEAD \\
        --bench-name mt_bench --question-end 2 --max-new-token 64 --method eagle --method baseline
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from eagle.benchmarks import bench_label, load_questions
from eagle.chat.formatter import ChatFormatter
from eagle.chat.templates import AUTO, add_template_flag, check_template_name
from eagle.evaluation.answers import RecordedSettings, answered_ids
from eagle.evaluation.methods import (
    EA_METHODS,
    HEAD_METHODS,
    METHOD_NAMES,
    Method,
    build_methods,
    check_methods,
)
from eagle.evaluation.runner import Job, RunConfig, generate_answers
from eagle.input_checks import (
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    PROBABILITY,
    SEED,
    check_values,
    inside,
    plain_name,
)
from eagle.model.generate import GenerationConfig
from eagle.model.loading import (
    ModelSpec,
    add_model_flags,
    add_placement_flags,
    ignored_placement_flags,
    model_spec,
)
from eagle.model.verify import SamplingParams

ANSWER_ROOT = Path("outputs")
FLAG_BOUNDS = {
    "--prompt-lookup-tokens": POSITIVE_INT,
    "--question-begin": NON_NEGATIVE_INT,
    "--question-end": NON_NEGATIVE_INT,
    "--max-new-token": POSITIVE_INT,
    "--max-length": POSITIVE_INT,
    "--temperature": NON_NEGATIVE,
    "--top-p": PROBABILITY,
    "--num-choices": POSITIVE_INT,
    "--max-turns": POSITIVE_INT,
    "--seed": SEED,
    "--warmup": NON_NEGATIVE_INT,
}
DESCRIPTION = (
    "Generate timed answers to benchmark questions (MT-bench, HumanEval or a question.jsonl) "
    "and append them to answer files for eagle.evaluation.speed."
)


# The system prompt of the original's Llama chat scripts (SafeAILab/EAGLE
# eagle/evaluation/gen_ea_answer_llama3chat.py @12c417d and gen_ea_answer_llama2chat.py
# @08dc06c set it as the conversation's system message): Llama 2's published default.
LLAMA_CHAT_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially "
    "unbiased and positive in nature.\n\nIf a question does not make any sense, or is not "
    "factually coherent, explain why instead of answering something not correct. If you don't "
    "know the answer to a question, please don't share false information."
)
# The original scripts' tree flags (--total-token/--depth/--top-k defaults), where read.
_TREE_60_5_10 = {"total_token": 60, "depth": 5, "top_k": 10}


@dataclass(frozen=True)
class Script:
    """The defaults of one entry point: what the original's script of that name did.

    ``tree`` lies over the library's default tree and under the head's ``tree.json`` and the
    flags; ``source`` says where the defaults were read (empty: this library's own names).
    """

    method: str = "eagle"
    template: str | None = None
    system_prompt: str | None = None
    tree: Mapping[str, int] | None = None
    source: str = ""


SCRIPTS: dict[str, Script] = {
    "gen_ea_answer": Script(),
    "gen_baseline_answer": Script(method="baseline"),
    "gen_ea_answer_vicuna": Script(
        template="vicuna_v1.1", tree=_TREE_60_5_10, source="gen_ea_answer_vicuna.py @f2f2366"
    ),
    "gen_baseline_answer_vicuna": Script(
        method="baseline", template="vicuna_v1.1", source="gen_baseline_answer_vicuna.py"
    ),
    "gen_ea_answer_llama3chat": Script(
        system_prompt=LLAMA_CHAT_SYSTEM_PROMPT,
        tree=_TREE_60_5_10,
        source="gen_ea_answer_llama3chat.py @12c417d",
    ),
    "gen_baseline_answer_llama3chat": Script(
        method="baseline",
        system_prompt=LLAMA_CHAT_SYSTEM_PROMPT,
        source="gen_baseline_answer_llama3chat.py",
    ),
    "gen_ea_answer_llama2chat": Script(
        system_prompt=LLAMA_CHAT_SYSTEM_PROMPT, source="gen_ea_answer_llama2chat.py @08dc06c"
    ),
    "gen_baseline_answer_llama2chat": Script(
        method="baseline",
        system_prompt=LLAMA_CHAT_SYSTEM_PROMPT,
        source="gen_baseline_answer_llama2chat.py @08dc06c",
    ),
    "gen_ea_answer_qwen3": Script(
        tree={"total_token": 32, "depth": 8, "top_k": 4}, source="gen_ea_answer_qwen3.py @3e056a4"
    ),
    "gen_ea_answer_mix": Script(source="gen_ea_answer_mix.py"),
    "gen_baseline_answer_mix": Script(method="baseline", source="gen_baseline_answer_mix.py"),
    "gen_ea_answer_ds": Script(source="gen_ea_answer_ds.py @d2134c1"),
}


class EntryPoint(Protocol):
    def __call__(self, argv: list[str] | None = None) -> None: ...


def script_main(name: str) -> EntryPoint:
    """The ``main`` of the entry point ``eagle.evaluation.NAME``, with its ``SCRIPTS`` row."""
    script = SCRIPTS[name]

    def entry(argv: list[str] | None = None) -> None:
        main(argv, script.method, script.template, script.system_prompt, script.tree)

    entry.__doc__ = f"Answer-file generation with the defaults of {name} ({script})."
    return entry


def main(
    argv: list[str] | None = None,
    method: str = "eagle",
    template: str | None = None,
    system_prompt: str | None = None,
    tree_defaults: Mapping[str, int] | None = None,
) -> None:
    """Parse ``argv``, load the models once and write the answer files."""
    parser = build_parser(method, template, system_prompt)
    args = parser.parse_args(argv)
    names = args.method or [method]
    try:
        run = run_config(args)
        need_head = bool(set(names) & set(EA_METHODS))
        models = model_spec(args, need_head=need_head, tree_defaults=tree_defaults)
        check_methods(names, models)
        check_template_name(args.template)
        paths = answer_files(args, names)
        shared = run_settings(args, models)
        for model_id, path in paths.values():
            answered_ids(path, model_id, shared)  # a file that cannot be resumed fails early
        questions = load_questions(args.bench_name, args.question_begin, args.question_end)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    for warning in ignored_placement_flags(args):
        print(f"{parser.prog}: warning: {warning}", file=sys.stderr)
    methods, tokenizer = build_methods(names, models, args.prompt_lookup_tokens)
    try:
        chat = ChatFormatter(tokenizer, args.template)
    except ValueError as error:
        parser.error(str(error))
    jobs = {
        name: Job(methods[name], model_id, path, method_settings(shared, name, methods, models))
        for name, (model_id, path) in paths.items()
    }
    written = generate_answers(questions, jobs, chat, run)
    for name, job in jobs.items():
        print(f"{name}: {job.answer_file}")
    print(f"{written} answers written")


def build_parser(
    method: str = "eagle", template: str | None = None, system_prompt: str | None = None
) -> argparse.ArgumentParser:
    """The command line shared by every answer-generation entry point."""
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    _add_model_flags(parser.add_argument_group("models"), method)
    _add_question_flags(parser.add_argument_group("questions and answers"), template)
    parser.add_argument(
        "--system-prompt",
        default=system_prompt,
        help="system message opening every conversation; '' for none (default: "
        + ("the original script's Llama chat system prompt" if system_prompt else "none")
        + ")",
    )
    _add_generation_flags(parser.add_argument_group("generation"))
    add_placement_flags(parser.add_argument_group("the original EAGLE's GPU placement (ignored)"))
    return parser


def _add_model_flags(group: argparse._ArgumentGroup, method: str) -> None:
    add_model_flags(group, static_tree=True, lookup=True)
    group.add_argument(
        "--method",
        action="append",
        choices=METHOD_NAMES,
        help=f"decoding method; repeat to run several interleaved (default: {method})",
    )
    group.add_argument(
        "--model-id",
        help="model id written to the answer files (default: target folder name + method; "
        "with several methods the method name is appended)",
    )
    group.add_argument(
        "--prompt-lookup-tokens",
        type=int,
        default=10,
        help="prompt_lookup_num_tokens of --method hf_prompt_lookup",
    )


def _add_question_flags(group: argparse._ArgumentGroup, template: str | None) -> None:
    group.add_argument(
        "--bench-name",
        default="mt_bench",
        help="mt_bench, humaneval, random_words, or a path to a FastChat question.jsonl",
    )
    group.add_argument("--question-begin", type=int, help="index of the first question asked")
    group.add_argument("--question-end", type=int, help="index after the last question asked")
    group.add_argument(
        "--answer-file",
        help="answer file, appended to and resumed; must contain {method} with several "
        f"methods (default: {ANSWER_ROOT}/BENCH/MODEL_ID-temperature-T.jsonl)",
    )
    add_template_flag(group, template or AUTO)


def _add_generation_flags(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--max-new-token", type=int, default=1024, help="new tokens per turn, max")
    group.add_argument("--max-length", type=int, default=2048, help="prompt + answer tokens, max")
    group.add_argument("--temperature", type=float, default=0.0, help="0 means greedy")
    group.add_argument("--top-p", type=float, default=0.0, help="nucleus sampling (0 or 1: off)")
    group.add_argument("--num-choices", type=int, default=1, help="conversations per question")
    group.add_argument(
        "--max-turns",
        type=int,
        default=None,
        help="ask only the first N turns of each question (e.g. 1: MT-bench first turns; "
        "default: all)",
    )
    group.add_argument("--seed", type=int, default=0, help="choice i is seeded with seed + i")
    group.add_argument("--warmup", type=int, default=3, help="untimed short runs per method")


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run settings from parsed flags; raises ValueError naming the first flag that is not
    a finite number in its range (``FLAG_BOUNDS``)."""
    check_values(args, FLAG_BOUNDS)
    sampling = SamplingParams(args.temperature, args.top_p)
    settings = GenerationConfig(sampling, args.max_new_token, args.max_length)
    system = args.system_prompt or None
    return RunConfig(settings, args.num_choices, args.seed, args.warmup, args.max_turns, system)


def machine_name(device: str) -> str:
    """What the timings ran on: the GPU's name on CUDA, else the CPU's model name (Linux's
    ``/proc/cpuinfo``, else ``platform.processor()``) and its core count."""
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            names = [
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            ]
        name = names[0] if names else name
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def run_settings(args: argparse.Namespace, models: ModelSpec) -> RecordedSettings:
    """The settings every method of this run shares, as recorded in the answer files."""
    import transformers

    return {
        "base_model_path": args.base_model_path,
        "dtype": models.dtype,
        "device": models.device,
        "threads": torch.get_num_threads(),
        "machine": machine_name(models.device),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_token": args.max_new_token,
        "max_length": args.max_length,
        "max_turns": args.max_turns,
        "num_choices": args.num_choices,
        "seed": args.seed,
        "system_prompt": args.system_prompt or None,
    }


def method_settings(
    shared: RecordedSettings, name: str, methods: dict[str, Method], models: ModelSpec
) -> RecordedSettings:
    """One method's answer-file settings: the shared ones, the method and its own settings."""
    head = {"ea_model_path": models.ea_model_path} if name in HEAD_METHODS else {}
    return {**shared, "method": name, **head, **methods[name].record}


def answer_files(args: argparse.Namespace, names: list[str]) -> dict[str, tuple[str, Path]]:
    """``{method: (model_id, answer file)}``; raises ValueError for ambiguous choices, and for a
    ``--model-id`` or ``--bench-name`` that would lead the default file out of ``outputs/``."""
    several = len(names) > 1
    if len(set(names)) != len(names):
        raise ValueError(f"--method repeats a method: {names}")
    if several and args.answer_file and "{method}" not in args.answer_file:
        raise ValueError("--answer-file must contain {method} when several --method are given")
    if args.model_id is not None and not args.answer_file:  # it names the default file
        plain_name("--model-id", args.model_id)
    result = {}
    for name in names:
        model_id = _model_id(args, name, several)
        if args.answer_file:
            path = Path(args.answer_file.replace("{method}", name))
        else:
            file_name = f"{model_id}-temperature-{args.temperature:g}.jsonl"
            folder = plain_name("--bench-name", bench_label(args.bench_name))
            path = inside(ANSWER_ROOT / folder / file_name, ANSWER_ROOT, "--model-id/--bench-name")
        result[name] = (model_id, path)
    return result


def _model_id(args: argparse.Namespace, method: str, several: bool) -> str:
    if args.model_id is None:
        return f"{Path(args.base_model_path.rstrip('/')).name}-{method}"
    return f"{args.model_id}-{method}" if several else args.model_id


if __name__ == "__main__":
    main()
