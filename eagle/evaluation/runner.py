"""Answering questions with timed methods, resumable, with warm-up: the evaluation's loop.

For each pending question and each method (interleaved, so the methods' timings share the
machine state) the turns are asked in order within one conversation, turn 2 seeing the method's
own turn-1 answer; each turn is timed on its own and the question's line, with the job's
settings, is appended to the method's answer file at once (format in
``eagle.evaluation.answers``). Questions already in a file are skipped, so a rerun with the
same settings completes an interrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from eagle.benchmarks import Question
from eagle.chat.formatter import ChatFormatter
from eagle.chat.templates import Message
from eagle.evaluation.answers import (
    Choice,
    RecordedSettings,
    answered_ids,
    append_answer,
    make_answer,
)
from eagle.evaluation.methods import Generation, Method
from eagle.model.generate import GenerationConfig

WARMUP_PROMPT = "Say hello and introduce yourself in one sentence."
WARMUP_MAX_NEW_TOKENS = 32


@dataclass(frozen=True)
class RunConfig:
    """How each question is answered: settings, sampled choices, seed and warm-up count."""

    settings: GenerationConfig
    num_choices: int = 1
    seed: int = 0
    warmup: int = 3
    max_turns: int | None = None  # ask only the first N turns of each question (None: all)
    system_prompt: str | None = None  # a system message opening every conversation (None: none)

    def opening(self) -> list[Message]:
        """The messages every conversation starts with: the system prompt, if any."""
        return [] if not self.system_prompt else [{"role": "system", "content": self.system_prompt}]


@dataclass(frozen=True)
class Job:
    """One method's share of a run: what generates, under which id, into which file, and the
    settings recorded on each line (a file is resumed only with equal settings)."""

    method: Method
    model_id: str
    answer_file: Path
    recorded_settings: RecordedSettings = field(default_factory=dict)


def generate_answers(
    questions: list[Question], jobs: dict[str, Job], chat: ChatFormatter, run: RunConfig
) -> int:
    """Answer every question not yet in each job's file; return the number of lines written."""
    done = {
        name: answered_ids(job.answer_file, job.model_id, job.recorded_settings)
        for name, job in jobs.items()
    }
    todo = [q for q in questions if any(q.question_id not in ids for ids in done.values())]
    if not todo:
        return 0
    warm_up(jobs, chat, run)
    written = 0
    for question in tqdm(todo, desc="questions", unit="q"):
        for name, job in jobs.items():
            if question.question_id in done[name]:
                continue
            choices = [
                answer_choice(question, job.method, chat, run, i) for i in range(run.num_choices)
            ]
            recorded = job.recorded_settings or None  # an empty record says nothing
            answer = make_answer(question.question_id, job.model_id, choices, recorded)
            append_answer(job.answer_file, answer)
            written += 1
    return written


def warm_up(jobs: dict[str, Job], chat: ChatFormatter, run: RunConfig) -> None:
    """Run ``run.warmup`` short untimed generations per method."""
    prompt = chat.prompt_ids([*run.opening(), {"role": "user", "content": WARMUP_PROMPT}])
    max_new = min(run.settings.max_new_tokens, WARMUP_MAX_NEW_TOKENS)
    settings = dataclasses.replace(run.settings, max_new_tokens=max_new)
    for name, job in jobs.items():
        for _ in tqdm(range(run.warmup), desc=f"warm-up {name}", unit="run", leave=False):
            job.method.generate(prompt, settings)


def answer_choice(
    question: Question, method: Method, chat: ChatFormatter, run: RunConfig, index: int
) -> Choice:
    """Ask all turns of ``question`` in one conversation; seeded by ``run.seed + index``."""
    torch.manual_seed(run.seed + index)
    messages: list[Message] = run.opening()
    texts, steps, tokens, seconds = [], [], [], []
    for turn in question.turns[: run.max_turns]:
        messages.append({"role": "user", "content": turn})
        generation, elapsed = timed_generation(method, chat.prompt_ids(messages), run.settings)
        text = chat.answer_text(generation.tokens)
        messages.append({"role": "assistant", "content": text})
        texts.append(text)
        steps.append(generation.steps)
        tokens.append(len(generation.tokens))
        seconds.append(elapsed)
    return Choice(index, texts, steps, tokens, seconds)


def timed_generation(
    method: Method, prompt: list[int], settings: GenerationConfig
) -> tuple[Generation, float]:
    """Generate and measure wall time in seconds (synchronizing CUDA around it)."""
    _synchronize(method.device)
    start = time.perf_counter()
    generation = method.generate(prompt, settings)
    _synchronize(method.device)
    return generation, time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
