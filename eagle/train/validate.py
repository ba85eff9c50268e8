"""``python -m eagle.train.validate``: a head's figures on a fixed validation set.

Two measurements, each a function usable on its own:

- ``teacher_forced``: on a feature folder written by ``eagle.ge_data`` (for the campaign: the
  target's own greedy answers to the held-out ``--split val`` prompts), the share of assistant
  positions where the head's best token is the target's argmax, per unrolled step (step s feeds
  the head its own features s times, as a depth-s tree node does). Top-1 is what greedy
  verification accepts. Data stored with the last hidden state gives the exact full-vocabulary
  target; data with only the top-K distribution drops the rare positions whose K tokens all
  lie outside the draft vocabulary (the count says how many positions were scored).
- ``end_to_end_tau``: greedy EAGLE decoding of the first user turn of each validation
  conversation with a given tree: tau = generated tokens / target steps, the figure that speed
  depends on.

Example (the campaign's validation set and the shipped head)::

    python -m eagle.train.validate --head eagle/model/heads/smollm2-135m-instruct-eagle3 \\
        --data runs/val-features --conversations runs/val/regenerated.jsonl --tau-prompts 24

The models come from the flags every command shares (``eagle.model.loading``: the built-in
target and its shipped head by default; ``--head`` is ``--ea-model-path``); ``--tree
total_token,depth,top_k`` is this command's tree (default 8,4,4, the campaign's).

Design choice: no training code path is bypassed; the teacher-forced figure is the training
loss module (``loss.HeadObjective``) in evaluation mode, so validation and training can never
disagree on alignment or masks.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from eagle.ge_data.feature_format import check_target, read_manifest
from eagle.input_checks import check_top_k_fits
from eagle.model.draft_head import weight_of
from eagle.model.generate import GenerationConfig
from eagle.model.loading import add_model_flags, checked_model_spec, show_library_logs
from eagle.train.data import FeatureDataset, collate, plan_batches
from eagle.train.loss import HeadObjective, LossSpec


@dataclass(frozen=True)
class TeacherForced:
    top1: list[float]  # per unrolled step: share of scored positions where top-1 is right
    positions: list[int]  # per unrolled step: positions scored
    loss: list[float]  # per unrolled step: mean soft cross-entropy


@dataclass(frozen=True)
class EndToEnd:
    tau: float  # generated tokens / target steps
    new_tokens: int
    steps: int
    prompts: int
    seconds: float
    tree: dict[str, int]


@torch.no_grad()
def teacher_forced(
    head: Any, lm_head: Any, data_dir: str | Path, steps: int, batch_tokens: int = 4096
) -> TeacherForced:
    """Per-step top-1 of ``head`` (EAGLE-3) on every sample of ``data_dir``, no input noise."""
    manifest = read_manifest(data_dir)
    dataset = FeatureDataset(manifest, max_len=1 << 30, with_aux=True)
    spec = LossSpec("eagle3", steps)
    objective = HeadObjective(head, lm_head, spec, noise=0.0).eval()
    plan = plan_batches(
        dataset.lengths, list(range(len(dataset))), 64, batch_tokens, seed=0, shuffle=False
    )
    sums: dict[str, torch.Tensor] = {}
    for indices in plan:
        batch = collate([dataset[i] for i in indices], extra=steps + 1)
        _, step_sums = objective(batch)
        for name, value in step_sums.items():
            sums[name] = sums.get(name, 0) + value.float()
    count = sums["count"].clamp(min=1)
    return TeacherForced(
        top1=[round(float(v), 4) for v in sums["correct"] / count],
        positions=[int(v) for v in sums["count"]],
        loss=[round(float(v), 4) for v in sums["loss"] / count],
    )


def first_prompts(conversations: str | Path, limit: int) -> list[list[dict[str, str]]]:
    """The first user turn (with the system message, if any) of the first ``limit``
    conversations of a regenerated JSON-lines file (``eagle.ge_data.regenerate`` output)."""
    from eagle.ge_data.regenerate import read_regenerated

    _, records = read_regenerated(conversations)
    prompts = []
    for conversation in list(records.values())[:limit]:
        messages = conversation.messages()
        cut = next(i for i, m in enumerate(messages) if m["role"] == "user") + 1
        prompts.append(messages[:cut])
    return prompts


def end_to_end_tau(
    model: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int, template: str = "auto"
) -> EndToEnd:
    """Greedy ``eagenerate`` on each prompt (chat-rendered); tau over all of them."""
    from eagle.chat.templates import prompt_ids, resolve_template

    chat = resolve_template(template, model.tokenizer)
    new_tokens = steps = 0
    start = time.perf_counter()
    for messages in prompts:
        ids = torch.tensor(
            [prompt_ids(model.tokenizer, chat, messages)], device=model.target.device
        )
        *_, last = model.generate_steps(ids, config=GenerationConfig(max_new_tokens=max_new_tokens))
        new_tokens += last.new_tokens
        steps += last.steps
    tree = model.tree
    shape = {k: getattr(tree, k) for k in ("total_token", "depth", "top_k") if hasattr(tree, k)}
    return EndToEnd(
        tau=round(new_tokens / max(steps, 1), 4),
        new_tokens=new_tokens,
        steps=steps,
        prompts=len(prompts),
        seconds=round(time.perf_counter() - start, 1),
        tree=shape,
    )


def validate_head(
    head_dir: str | Path,
    base_model_path: str,
    data_dir: str | Path | None,
    conversations: str | Path | None,
    steps: int = 5,
    tau_prompts: int = 24,
    max_new_tokens: int = 128,
    tree: tuple[int, int, int] = (8, 4, 4),
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> dict[str, Any]:
    """Both measurements for one head (either is skipped when its input is None)."""
    from eagle.model.ea_model import EaModel

    total_token, depth, top_k = tree
    model = EaModel.from_pretrained(
        base_model_path=base_model_path, ea_model_path=str(head_dir),
        total_token=total_token, depth=depth, top_k=top_k, dtype=dtype, device_map=device,
    )  # fmt: skip
    model.eval()
    out: dict[str, Any] = {"head": str(head_dir)}
    if data_dir is not None:
        from eagle.ge_data.feature_format import target_fingerprint

        manifest = read_manifest(data_dir)
        target = model.target
        embedding = weight_of(target.embed_tokens)
        fingerprint = target_fingerprint(target.config.to_json_string(), embedding)
        vocab, width = embedding.shape
        check_target(manifest, fingerprint, int(vocab), int(width), target.num_layers)
        from eagle.train.build import CastInput  # stored features are bf16, the target may not be

        measured = teacher_forced(model.head, CastInput(target.lm_head), data_dir, steps)
        out["teacher_forced"] = asdict(measured)
    if conversations is not None and tau_prompts > 0:
        prompts = first_prompts(conversations, tau_prompts)
        out["end_to_end"] = asdict(end_to_end_tau(model, prompts, max_new_tokens))
    return out


def _tree(text: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"--tree takes total_token,depth,top_k as three positive integers, got {text!r}"
        )
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eagle.train.validate",
        description="Teacher-forced top-1 per unrolled step and end-to-end greedy tau of an "
        "EAGLE-3 head on a fixed validation set.",
    )
    add_model_flags(p, tree=False, head_aliases=("--head",))  # --tree below is the tree
    p.add_argument("--data", default=None, help="validation feature folder (eagle.ge_data)")
    p.add_argument(
        "--conversations", default=None, help="regenerated JSON-lines file (prompts for tau)"
    )
    p.add_argument("--steps", type=int, default=5, help="unrolled steps to score (default 5)")
    p.add_argument("--tau-prompts", type=int, default=24, help="prompts decoded for tau")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens per prompt for tau")
    p.add_argument(
        "--tree", type=_tree, default=(8, 4, 4), help="total_token,depth,top_k (default 8,4,4)"
    )
    p.add_argument("--json", default=None, help="append the result as one JSON line here")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("steps", "max_new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.tau_prompts < 0:
        parser.error(f"--tau-prompts must be >= 0, got {args.tau_prompts}")
    if args.data is None and args.conversations is None:
        parser.error("give --data (teacher-forced top-1), --conversations (tau) or both")
    spec = checked_model_spec(parser, args, tree=False)
    try:
        check_top_k_fits(args.tree[2], spec.ea_model_path)
    except ValueError as error:
        parser.error(str(error))
    show_library_logs()
    assert spec.ea_model_path is not None  # checked_model_spec resolves the head (need_head)
    result = validate_head(
        spec.ea_model_path, spec.base_model_path, args.data, args.conversations, args.steps,
        args.tau_prompts, args.max_new_tokens, args.tree, spec.torch_dtype, spec.device,
    )  # fmt: skip
    line = json.dumps(result)
    print(line)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")
    if not math.isfinite(result.get("teacher_forced", {}).get("loss", [0.0])[0]):
        raise SystemExit("validation loss is not finite")
    return result


if __name__ == "__main__":
    main()
