"""Device benchmark: what one EAGLE-3 iteration costs on a GPU, with random weights of real shapes.

    python -m eagle.evaluation.device_bench --json bench.json       # on a GPU, about 2-4 minutes
    python -m eagle.evaluation.device_bench --tiny                  # same code, tiny shapes, CPU

Random weights accept almost nothing, so this measures *costs* only; acceptance comes from the
published figures. For each target (built from a config written below, no hub access) and an
EAGLE-3 head of the published shape (one layer, 32k draft vocabulary), in one process:

- ``plain step``: one decode step of ``naivegenerate`` (the library's own loop, the speed
  baseline), and of transformers ``generate()`` (difference of a 1+T and a 1-token run, / T);
- ``verify r(N)``: one target forward of N tree tokens after the prompt, relative to N = 1
  (``autotune.measure_verify_seconds``);
- ``draft``: ``propose`` of the default tree (60 nodes, depth 7, top-k 10: head catch-up, 7
  levels, selection), one level (from a depth-7 and a depth-1 proposal), and the time the
  head's weights alone would predict ((depth + 1) reads of the head's share of the weights);
- ``iteration``: ``eagenerate``'s draft / verify / other split per iteration (the decode loop's
  ``SectionTimer``) and the host syncs of one step (ops that make the host wait for the device,
  counted as ``tests/test_host_syncs.py`` does);
- ``implied speedup``: tau x plain step / iteration, for the acceptance lengths tau that the
  EAGLE-3 paper measured with this target, printed next to the speedups it measured;
- peak GPU memory.

Published figures (``PUBLISHED``): Li et al., "EAGLE-3: Scaling up Inference Acceleration of
Large Language Models via Training-Time Test", arXiv:2503.01840, Table 1, temperature 0,
LLaMA-Instruct 3.1 8B (their tree: 60 nodes, depth 8, top-k 10; their baseline: transformers
with a pre-allocated cache). The values were read from a transcription of Table 1 and checked
against the paper's Figure 1 and Table 2 (MT-bench 4.40x, tau 6.13). The paper has no Qwen3-8B
row; the Qwen3 target reuses the Llama taus, marked as such. Shapes: Llama-3.1-8B's and
Qwen3-8B's published ``config.json``; the head: ``yuhuili/EAGLE3-LLaMA3.1-Instruct-8B``'s
``config.json`` (hidden 4096, intermediate 14336, 32/8 heads, draft vocabulary 32000).

Implied speedups ignore what acceptance adds to an iteration (a longer head catch-up, a larger
cache compaction), so they are upper estimates for this code at that tau.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

VERIFY_SIZES = (1, 8, 16, 32, 60, 64, 128)

_LLAMA31_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
    rms_norm_eps=1e-5, tie_word_embeddings=False, rope_theta=500000.0,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
)  # fmt: skip
_QWEN3_8B = dict(
    vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
    rms_norm_eps=1e-6, tie_word_embeddings=False, rope_theta=1000000.0,
)  # fmt: skip
_TINY = dict(
    vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
    tie_word_embeddings=False,
)  # fmt: skip


@dataclass(frozen=True)
class Shape:
    """A target architecture and size, and the EAGLE-3 head that goes with it."""

    arch: str  # transformers config class: "llama" or "qwen3"
    config: dict
    head_intermediate: int
    draft_vocab: int
    published: str | None  # key of PUBLISHED whose taus apply


SHAPES = {
    "llama3.1-8b": Shape("llama", _LLAMA31_8B, 14336, 32000, "llama3.1-8b"),
    "qwen3-8b": Shape("qwen3", _QWEN3_8B, 12288, 32000, None),
    "tiny-llama": Shape("llama", _TINY, 128, 256, "llama3.1-8b"),
}

# arXiv:2503.01840 Table 1, temperature 0, LLaMA-Instruct 3.1 8B, EAGLE-3: (speedup, tau)
PUBLISHED = {
    "llama3.1-8b": {
        "MT-bench": (4.40, 6.13),
        "HumanEval": (4.85, 6.74),
        "GSM8K": (4.48, 6.23),
        "Alpaca": (4.82, 6.70),
        "CNN/DM": (3.65, 5.34),
        "mean": (4.44, 6.23),
    }
}


@dataclass
class Settings:
    """How much to run: sizes of the timed runs (tiny mode shrinks them)."""

    prompt_tokens: int = 128
    new_tokens: int = 64
    repeats: int = 3
    verify_repeats: int = 5
    draft_repeats: int = 10
    sync_steps: int = 3


@dataclass
class Report:
    """One target's measurements; ``rows`` keep the table's order."""

    name: str
    values: dict = field(default_factory=dict)


# -- models ------------------------------------------------------------------------------------


def build_target(shape: Shape, device: torch.device, dtype: torch.dtype):
    """A random target of the shape, created on the device (no CPU copy of an 8B model)."""
    import transformers
    from transformers import AutoModelForCausalLM

    from eagle.model.target import TargetModel

    config_class = {"llama": transformers.LlamaConfig, "qwen3": transformers.Qwen3Config}
    config = config_class[shape.arch](**shape.config)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return TargetModel(model.to(device).eval())


def build_eagle3_head(target, shape: Shape):
    """A random EAGLE-3 head of the published shape for this target (reduced draft vocab)."""
    from eagle.model.draft_head import HeadConfig, TargetParts, build_head

    cfg = shape.config
    config = HeadConfig(
        variant="eagle3",
        hidden_size=cfg["hidden_size"],
        intermediate_size=shape.head_intermediate,
        num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"],
        vocab_size=cfg["vocab_size"],
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-6),
        rope_theta=cfg.get("rope_theta", 10000.0),
        head_dim=cfg.get("head_dim"),
        draft_vocab_size=shape.draft_vocab,
    )
    torch.manual_seed(1)
    with torch.device(target.device):
        head = build_head(config, TargetParts(target.embed_tokens, target.lm_head), False)
    return head.to(target.device, target.dtype).eval()


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- timing ------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call, the device drained before and after."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(seconds(fn, device) for _ in range(repeats))


def plain_and_eagle(model, prompt: torch.Tensor, settings: Settings) -> dict:
    """naivegenerate's ms per step and eagenerate's per-iteration split, interleaved runs."""
    from eagle.model.generate import GenerationConfig, SectionTimer

    config = GenerationConfig(
        max_new_tokens=settings.new_tokens,
        max_length=prompt.shape[1] + settings.new_tokens + 1,
    )
    for use_draft in (False, True):  # warm-up
        list(model.generate_steps(prompt, use_draft=use_draft, max_new_tokens=4))
    plain_runs: list[float] = []
    parts: Counter[str] = Counter()  # section -> seconds over the EAGLE iterations
    iterations, tokens = 0, 0
    for _ in range(settings.repeats):
        timer = SectionTimer()
        steps = list(model.generate_steps(prompt, use_draft=False, timer=timer, config=config))
        decode_seconds = sum(timer.seconds.values()) - timer.seconds["prefill"]
        plain_runs.append(decode_seconds / (len(steps) - 1))
        timer = SectionTimer()
        steps = list(model.generate_steps(prompt, use_draft=True, timer=timer, config=config))
        iterations += len(steps) - 1
        tokens += steps[-1].new_tokens - 1
        parts.update({k: v for k, v in timer.seconds.items() if k != "prefill"})
    split = {name: 1e3 * parts[name] / iterations for name in ("draft", "verify", "other")}
    return {
        "plain_step_ms": 1e3 * statistics.median(plain_runs),
        "iteration_ms": sum(split.values()),
        **{f"iteration_{name}_ms": ms for name, ms in split.items()},
        "tokens_per_iteration": tokens / iterations,
    }


def hf_generate_step_ms(target, prompt: torch.Tensor, settings: Settings) -> float:
    """ms per decode step of transformers' greedy ``generate()``: (t(1 + T) - t(1)) / T."""
    model, device, new = target.model, target.device, settings.new_tokens
    mask = torch.ones_like(prompt)
    produced = []

    def run(count: int) -> Callable[[], None]:
        def call() -> None:
            with torch.no_grad():
                out = model.generate(
                    prompt, attention_mask=mask, max_new_tokens=count, min_new_tokens=count,
                    do_sample=False, pad_token_id=0,
                )  # fmt: skip
            produced.append(out.shape[1] - prompt.shape[1])

        return call

    short = median_seconds(run(1), device, settings.repeats)
    long = median_seconds(run(1 + new), device, settings.repeats)
    assert produced[-1] == 1 + new, produced  # min_new_tokens kept EOS from ending it early
    return 1e3 * (long - short) / new


def verify_costs(target, settings: Settings) -> dict:
    from eagle.model.autotune import measure_verify_seconds

    measured = measure_verify_seconds(
        target, VERIFY_SIZES, context=settings.prompt_tokens, repeats=settings.verify_repeats
    )
    return {
        "verify_ms": {n: 1e3 * s for n, s in measured.items()},
        "verify_ratio": {n: s / measured[1] for n, s in measured.items()},
    }


def draft_costs(model, prompt: torch.Tensor, settings: Settings) -> dict:
    """ms of ``propose`` for the default tree (depth 7) and per level (depth 7 vs depth 1)."""
    from eagle.model.draft import DynamicTree, EagleDrafter

    target, device = model.target, model.target.device
    layers = model.drafter.feature_layers
    with torch.no_grad():
        features = target.prefill(prompt, target.new_cache(), layers).features
    tokens = prompt[0]
    ms = {}
    for depth in (1, 7):
        drafter = EagleDrafter(model.head, DynamicTree(60, depth, 10), layers, target.row_product)
        state = drafter.start()
        with torch.no_grad():
            drafter.propose(state, features[:-1], tokens[:-1])  # catch up on the prompt

            def one(drafter=drafter, state=state) -> None:
                drafter.propose(state, features[-1:], tokens[-1:])

            ms[depth] = 1e3 * median_seconds(one, device, settings.draft_repeats)
    return {"draft_tree_ms": ms[7], "draft_level_ms": (ms[7] - ms[1]) / 6}


# -- host syncs --------------------------------------------------------------------------------

_ALWAYS_SYNC = {
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten._unique2.default,
    torch.ops.aten.unique_consecutive.default,
    torch.ops.aten.unique_dim.default,
}
_INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default}
_COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}


class HostSyncCounter(TorchDispatchMode):
    """Counts the ops after which the host must wait for a GPU: data-dependent shapes
    (nonzero, boolean-mask indexing, repeat_interleave without output_size), scalar reads
    (``int()``, ``.item()``), and copies from a GPU to the CPU. Works on CPU tensors too, so the
    count on a CPU is the count the same step makes on a GPU (less the device-to-host copies,
    which a CPU run has none of). ``Tensor.tolist`` is counted by ``reading_tolist``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.quiet = 0  # > 0 inside a counted tolist, whose own copy is not counted again

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.quiet:
            pass
        elif func in _ALWAYS_SYNC:
            self.counts[str(func)] += 1
        elif func in _INDEXING and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
        ):
            self.counts[f"{func} (bool mask)"] += 1
        elif func is torch.ops.aten.repeat_interleave.Tensor and kwargs.get("output_size") is None:
            self.counts[str(func)] += 1
        elif func in _COPIES and _device_to_host(func, args, kwargs):
            self.counts["device-to-host copy"] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _device_to_host(func, args, kwargs) -> bool:
    if func is torch.ops.aten.copy_.default:
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    target = kwargs.get("device")
    return (
        args[0].device.type != "cpu" and target is not None and torch.device(target).type == "cpu"
    )


@contextlib.contextmanager
def reading_tolist(counter: HostSyncCounter) -> Iterator[None]:
    """Count ``Tensor.tolist`` calls (one host read each) while the block runs."""
    original = torch.Tensor.tolist

    def tolist(self, *args, **kwargs):
        counter.counts["Tensor.tolist"] += 1
        counter.quiet += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            counter.quiet -= 1

    torch.Tensor.tolist = tolist  # type: ignore[method-assign]  # patched for the block only
    try:
        with counter:
            yield
    finally:
        torch.Tensor.tolist = original  # type: ignore[method-assign]


def host_syncs_per_step(model, prompt: torch.Tensor, settings: Settings) -> dict:
    """Syncs in each of a few EAGLE decode steps after the prefill: the largest count, by op."""
    steps = model.generate_steps(prompt, max_new_tokens=settings.sync_steps + 2)
    next(steps)  # the prefill
    worst: Counter[str] = Counter()
    for _ in range(settings.sync_steps):
        counter = HostSyncCounter()
        with reading_tolist(counter):
            step = next(steps)
        if counter.total > sum(worst.values()):
            worst = counter.counts
        if step.finished:
            break
    return {"host_syncs_per_step": sum(worst.values()), "host_syncs_by_op": dict(worst)}


# -- one target --------------------------------------------------------------------------------


def bench_target(name: str, device: torch.device, dtype: torch.dtype, settings: Settings) -> Report:
    from eagle.model.draft import DynamicTree
    from eagle.model.ea_model import EaModel

    shape = SHAPES[name]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    target = build_target(shape, device, dtype)
    head = build_eagle3_head(target, shape)
    model = EaModel(target, head, None, DynamicTree(60, 7, 10), eos_ids=set())
    report = Report(name)
    values = report.values
    values["target_params_b"] = parameter_count(target.model) / 1e9
    head_params = parameter_count(head)  # the borrowed embedding is not the head's
    values["head_params_m"] = head_params / 1e6
    values["build_s"] = time.perf_counter() - started
    vocab = target.vocab_size
    generator = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, vocab, (1, settings.prompt_tokens), generator=generator)
    prompt = prompt.to(device)
    values.update(plain_and_eagle(model, prompt, settings))
    values["hf_generate_step_ms"] = hf_generate_step_ms(target, prompt, settings)
    values.update(verify_costs(target, settings))
    values.update(draft_costs(model, prompt, settings))
    share = head_params / parameter_count(target.model)
    values["draft_tree_from_weights_ms"] = (7 + 1) * share * values["plain_step_ms"]
    values.update(host_syncs_per_step(model, prompt, settings))
    values["implied"] = implied_speedups(values, shape.published)
    values["published_taus_from"] = shape.published
    if device.type == "cuda":
        values["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    values["total_s"] = time.perf_counter() - started
    return report


def implied_speedups(values: dict, published: str | None) -> dict:
    """tau x step / iteration for each published tau, against both plain baselines."""
    rows = PUBLISHED.get(published or "llama3.1-8b", {})
    iteration = values["iteration_ms"]
    return {
        task: {
            "tau": tau,
            "paper_speedup": speedup,
            "vs_naivegenerate": tau * values["plain_step_ms"] / iteration,
            "vs_hf_generate": tau * values["hf_generate_step_ms"] / iteration,
        }
        for task, (speedup, tau) in rows.items()
    }


# -- output ------------------------------------------------------------------------------------

_ROWS = [
    ("target parameters (B)", "target_params_b", "{:.4g}"),
    ("head parameters (M)", "head_params_m", "{:.1f}"),
    ("plain step, naivegenerate (ms)", "plain_step_ms", "{:.2f}"),
    ("plain step, HF generate() (ms)", "hf_generate_step_ms", "{:.2f}"),
    ("draft, whole tree 60/7/10 (ms)", "draft_tree_ms", "{:.2f}"),
    ("draft, one level (ms)", "draft_level_ms", "{:.2f}"),
    ("draft, head weights predict (ms)", "draft_tree_from_weights_ms", "{:.2f}"),
    ("iteration: draft (ms)", "iteration_draft_ms", "{:.2f}"),
    ("iteration: verify N=60 (ms)", "iteration_verify_ms", "{:.2f}"),
    ("iteration: other (ms)", "iteration_other_ms", "{:.2f}"),
    ("iteration: total (ms)", "iteration_ms", "{:.2f}"),
    ("host syncs per step", "host_syncs_per_step", "{}"),
    ("peak GPU memory (GiB)", "peak_memory_gib", "{:.1f}"),
    ("wall time of this target (s)", "total_s", "{:.0f}"),
]


def table(reports: list[Report]) -> str:
    """The one table: a row per quantity, a column per target."""
    names = [r.name for r in reports]
    lines = ["| quantity | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    for label, key, fmt in _ROWS:
        row(label, [_cell(r.values.get(key), fmt) for r in reports])
    for n in VERIFY_SIZES:
        row(
            f"verify r({n}) = t(N)/t(1)",
            [f"{r.values['verify_ratio'][n]:.2f} ({r.values['verify_ms'][n]:.1f} ms)" for r in reports],
        )  # fmt: skip
    for task in PUBLISHED["llama3.1-8b"]:
        cells = []
        for r in reports:
            figure = r.values["implied"][task]
            mark = "" if r.values["published_taus_from"] else "*"
            cells.append(
                f"{figure['vs_naivegenerate']:.2f}x / {figure['vs_hf_generate']:.2f}x{mark}"
            )
        speedup, tau = PUBLISHED["llama3.1-8b"][task]
        row(f"implied at {task} tau {tau} (paper {speedup:.2f}x)", cells)
    return "\n".join(lines)


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    import transformers

    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--targets",
        default="llama3.1-8b,qwen3-8b",
        help=f"comma-separated target shapes, from {', '.join(SHAPES)} (default: the two 8B)",
    )
    p.add_argument("--tiny", action="store_true", help="tiny shapes and short runs (CPU smoke)")
    p.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda if any)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"),
                   help="weights dtype (default bfloat16)")  # fmt: skip
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = getattr(torch, args.dtype)
    if args.tiny:
        names, settings = ["tiny-llama"], Settings(32, 8, 1, 2, 2, 2)
    else:
        names, settings = [n.strip() for n in args.targets.split(",")], Settings()
        unknown = [n for n in names if n not in SHAPES]
        if unknown:
            raise SystemExit(f"unknown target {unknown}; choose from {', '.join(SHAPES)}")
        if device.type != "cuda":
            raise SystemExit("8B shapes need a GPU; use --tiny on a CPU")
    result = {"environment": environment(device, dtype), "settings": vars(settings)}
    reports = []
    for name in names:
        reports.append(bench_target(name, device, dtype, settings))
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result["targets"] = {r.name: r.values for r in reports}
    result["published"] = {"source": "arXiv:2503.01840 Table 1, temperature 0", **PUBLISHED}
    env = result["environment"]
    print(
        f"device bench: {env.get('gpu', env['device'])}, torch {env['torch']}, "
        f"transformers {env['transformers']}, {env['dtype']}, prompt {settings.prompt_tokens}, "
        f"{settings.new_tokens} new tokens; random weights (costs only)"
    )
    print(table(reports))
    print(
        "implied = tau x plain step / iteration, vs naivegenerate / vs HF generate(); "
        "* = the paper's Llama-3.1-8B tau (no published figure for this target)"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as stream:
            json.dump(result, stream, indent=1, default=str)
    return result


if __name__ == "__main__":
    main()
