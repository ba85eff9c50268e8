"""One way for every command to name its models and load them: the flags and the loader.

    add_model_flags(parser)                     # --base-model-path, --ea-model-path, tree, dtype, device
    args = parser.parse_args(argv)
    spec = checked_model_spec(parser, args)     # checked before anything loads (exit 2, flag named)
    model = load_ea_model(spec)                 # or load_target(spec): the target alone

Every default is defined here once (the commands' help texts say the same):

- target ``smollm2-135m-instruct`` (``defaults.DEFAULT_TARGET``, built in and converted offline);
- head: the one shipped for a built-in target (``shipped.head_for``); any other target needs
  ``--ea-model-path``;
- tree: the head's ``tree.json`` over the library's ``DynamicTree()`` (60, 7, 10); each of
  ``--total-token``/``--depth``/``--top-k`` that is given overrides both;
- dtype ``bfloat16``, one of ``DTYPES``: what the published EAGLE targets ship in, half the
  memory of float32, and the dtype the README's commands and numbers use; ``auto``
  (``fastest_dtype``) takes ``bfloat16`` on a GPU and the faster of the two for a large matrix
  product on a CPU (float32 where the CPU has no bf16 instructions). Which is faster for
  *decoding* on a CPU depends on the layer sizes and the number of rows verified at once
  (one-row products are memory-bound, where bf16's half-size weights win even without bf16
  instructions), so measure with ``eagle.evaluation.profile_steps``. Training's loss targets
  are a precision choice of their own (``eagle.train.main --target-dtype``, float32);
- device ``auto``: ``cuda`` when CUDA is available, else ``cpu``; ``cpu``, ``cuda`` and
  ``cuda:N`` pick one. (Spreading a large target over several GPUs is the Python API's
  ``device_map="auto"``.)

Flags of the original EAGLE's commands (SafeAILab/EAGLE; file and commit where each is added)
are accepted here too, so its command lines run: ``--use_eagle3``, ``--tree-choices`` (an
EAGLE-1 static tree, ``static_tree=True``), ``--load-in-8bit``/``--load-in-4bit``
(``add_quantization_flags``: bitsandbytes) and the GPU placement flags of its evaluation
scripts, accepted and reported as ignored (``add_placement_flags``, ``ignored_placement_flags``).

``ModelSpec`` is the checked, resolved result, a typed value that a command can also build
directly; its checks raise ValueError naming the flag and its allowed values. The loaders are
for commands: they show the library's INFO messages on stderr (``show_library_logs``: the
first-use conversion of the built-in target, the ``total_token=-1`` measurements) and turn a
model that cannot be loaded into an exit naming the flag.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from eagle.input_checks import TREE_FLAGS, check_device, check_top_k_fits, check_values
from eagle.model import shipped
from eagle.model.defaults import DEFAULT_TARGET, is_registered
from eagle.model.draft import DynamicTree

if TYPE_CHECKING:
    import torch

    from eagle.model.ea_model import EaModel
    from eagle.model.lookup import LookupSettings
    from eagle.model.target import TargetModel
    from eagle.model.tree import StaticTree

DTYPES = ("float32", "bfloat16", "float16")  # names of torch dtypes
DTYPE_CHOICES = ("auto", *DTYPES)  # the --dtype choices; auto: fastest_dtype(device)
DEFAULT_DTYPE = "bfloat16"
DEFAULT_DEVICE = "auto"
_DEFAULT_DYNAMIC = DynamicTree()
DEFAULT_TREE: dict[str, int] = {
    f.name: getattr(_DEFAULT_DYNAMIC, f.name) for f in fields(DynamicTree)
}
QUANTIZATIONS = ("4bit", "8bit")  # bitsandbytes, as --load-in-4bit / --load-in-8bit
TreePaths = tuple[tuple[int, ...], ...]  # an EAGLE-1 static tree: top-k rank paths from the root


@dataclass(frozen=True)
class ModelSpec:
    """Which models a command loads and how: paths, tree, dtype and device, all resolved.

    ``ea_model_path`` is None for a command that loads the target alone; ``device`` is a
    concrete device (``auto`` already decided); ``total_token`` -1 measures on this device.
    ``tree_choices``: an EAGLE-1 static tree used instead of the dynamic one (then the three
    sizes are unused); ``quantization``: load the target with bitsandbytes in 4 or 8 bits;
    ``lookup``: drafts from the context added to EAGLE's trees (None: off).
    """

    base_model_path: str = DEFAULT_TARGET
    ea_model_path: str | None = None
    total_token: int = DEFAULT_TREE["total_token"]
    depth: int = DEFAULT_TREE["depth"]
    top_k: int = DEFAULT_TREE["top_k"]
    use_eagle3: bool | None = None
    dtype: str = DEFAULT_DTYPE  # a concrete dtype (model_spec resolves --dtype auto)
    device: str = "cpu"
    tree_choices: TreePaths | None = None
    quantization: str | None = None
    lookup: LookupSettings | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device == "auto":
            raise ValueError("ModelSpec.device is a concrete device; resolve_device('auto') first")
        check_device(self.device)
        for flag, bound in TREE_FLAGS.items():
            bound.check(flag, getattr(self, flag_dest(flag)))
        if self.use_eagle3 not in (None, True, False):
            raise ValueError(f"use_eagle3 must be True, False or None, got {self.use_eagle3!r}")
        if self.quantization not in (None, *QUANTIZATIONS):
            raise ValueError(
                f"quantization must be None or one of {', '.join(QUANTIZATIONS)}, "
                f"got {self.quantization!r}"
            )
        if self.tree_choices is not None:
            checked_static_tree(self.tree_choices)  # raises naming --tree-choices
        from eagle.model.lookup import LookupSettings

        if self.lookup is not None and not isinstance(self.lookup, LookupSettings):
            raise ValueError(f"lookup must be a LookupSettings or None, got {self.lookup!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    @property
    def tree(self) -> dict[str, int]:
        """``total_token``, ``depth`` and ``top_k``, as ``EaModel.from_pretrained`` takes them."""
        return {"total_token": self.total_token, "depth": self.depth, "top_k": self.top_k}

    @property
    def load_kwargs(self) -> dict[str, Any]:
        """The keywords of ``EaModel.from_pretrained`` beyond the paths and ``tree``: variant,
        static tree, dtype, device and quantization."""
        kwargs: dict[str, Any] = {"dtype": self.torch_dtype, "device_map": self.device}
        if self.quantization is not None:
            kwargs[f"load_in_{self.quantization}"] = True
        return kwargs


def checked_static_tree(paths: TreePaths) -> StaticTree:
    """The ``StaticTree`` of ``paths``; ValueError naming ``--tree-choices`` when they do not
    make a tree (empty, negative ranks, a path whose parent is missing)."""
    from eagle.model.tree import StaticTree

    try:
        return StaticTree.from_paths([list(path) for path in paths])
    except (ValueError, TypeError) as error:
        raise ValueError(f"--tree-choices: {error}") from error


def parse_tree_choices(text: str) -> TreePaths:
    """``--tree-choices``: a preset name (``eagle.model.presets``: ``mc_sim_7b_63``, the
    original's default, ``eagle1_26``, ``chain_N``) or a Python list of top-k rank paths such
    as ``[[0], [1], [0, 0]]`` (read as a literal; the original ``eval``-ed it). ValueError
    naming the flag otherwise."""
    from eagle.model import presets

    text = text.strip()
    if text.startswith(("[", "(")):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"--tree-choices is not a list of rank paths: {text!r}") from error
        if not isinstance(value, list | tuple) or not all(
            isinstance(path, list | tuple) and all(type(r) is int for r in path) for path in value
        ):
            raise ValueError(
                f"--tree-choices must be a list of lists of ints such as [[0], [1], [0, 0]], "
                f"got {text!r}"
            )
        paths: TreePaths = tuple(tuple(path) for path in value)
    else:
        try:
            paths = tuple(tuple(path) for path in presets.static_tree(text))
        except ValueError as error:
            raise ValueError(f"--tree-choices: {error}") from error
    checked_static_tree(paths)
    return paths


def resolve_device(device: str | None) -> str:
    """The device a ``--device`` value means here: ``auto`` (or None) is cuda when CUDA is
    available, else cpu; anything else must be cpu, cuda or cuda:N present on this machine."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device, also=("auto",))
    return device


def fastest_dtype(device: str = "cpu", size: int = 512) -> str:
    """``bfloat16`` on CUDA; on a CPU ``bfloat16`` when its bf16 matrix products beat float32's
    (CPUs with bf16 instructions), else ``float32``: timed with a [size, 576] x [576, 1536]
    product (a small model's MLP shape), ten of each after a warm-up."""
    import time

    import torch

    if device.startswith("cuda"):
        return "bfloat16"
    times: dict[str, float] = {}
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(size, 576).to(dtype), torch.randn(576, 1536).to(dtype)
        a @ b  # warm-up
        start = time.perf_counter()
        for _ in range(10):
            a @ b
        times[str(dtype).removeprefix("torch.")] = time.perf_counter() - start
    return min(times, key=lambda name: times[name])


def resolve_dtype(dtype: str | None, device: str) -> str:
    """The dtype a ``--dtype`` value means on ``device``: ``auto`` (or None) is
    ``fastest_dtype(device)``; anything else must be one of ``DTYPES``."""
    if dtype in (None, "auto"):
        return fastest_dtype(device)
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)}, got {dtype!r}")
    return dtype


def add_model_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    head: bool = True,
    tree: bool = True,
    dtype: bool = True,
    device: bool = True,
    target_aliases: tuple[str, ...] = (),
    head_aliases: tuple[str, ...] = (),
    static_tree: bool = False,
    lookup: bool = False,
) -> None:
    """Add the model flags: target, head and EAGLE variant (``head``), tree (``tree``), dtype
    (``dtype``) and device (``device``). ``*_aliases`` are older spellings a command keeps
    working (``--basepath``). ``static_tree``: also ``--tree-choices``, for a command that
    passes ``ModelSpec.tree_choices`` on (the answer generation). ``lookup``: also
    ``--lookup``/``--no-lookup`` and the ``--lookup-*`` settings (``add_lookup_flags``)."""
    parser.add_argument(
        "--base-model-path", *target_aliases, dest="base_model_path", default=DEFAULT_TARGET,
        help=f"target: hub id, local folder or registered name (default: {DEFAULT_TARGET}, "
        "the built-in SmolLM2, converted once from its offline wheel)",
    )  # fmt: skip
    if head:
        parser.add_argument(
            "--ea-model-path", *head_aliases, dest="ea_model_path", default=None,
            help="draft head: folder or hub id, EAGLE-1 or EAGLE-3 detected (default: the head "
            "shipped for the built-in target)",
        )  # fmt: skip
        variant = parser.add_mutually_exclusive_group()
        # --use_eagle3: the original README's spelling; its gen_ea_answer_qwen3.py @3e056a4 says
        # --use-eagle3. There, without the flag an EAGLE-1 head was assumed; here it is detected.
        variant.add_argument(
            "--use-eagle3", "--use_eagle3", dest="use_eagle3", action="store_const", const=True,
            default=None, help="require an EAGLE-3 head (default: detect the variant from the head)",
        )  # fmt: skip
        variant.add_argument(
            "--no-eagle3", dest="use_eagle3", action="store_const", const=False,
            help="require an EAGLE-1 head; an EAGLE-3 head is then an error",
        )  # fmt: skip
    if tree:
        default = "default: the head's tree.json, else"
        parser.add_argument(
            "--total-token", type=int, default=None,
            help=f"tree nodes verified per step, -1: measure on this device and choose "
            f"({default} {DEFAULT_TREE['total_token']})",
        )  # fmt: skip
        parser.add_argument(
            "--depth", type=int, default=None,
            help=f"tree expansion steps ({default} {DEFAULT_TREE['depth']})",
        )  # fmt: skip
        parser.add_argument(
            "--top-k", type=int, default=None,
            help=f"tree branching per level ({default} {DEFAULT_TREE['top_k']})",
        )  # fmt: skip
    if tree and static_tree:
        # SafeAILab/EAGLE evaluation/gen_ea_answer_vicuna.py @b2faa21 (EAGLE-1) eval()-s it into
        # the static tree; its EAGLE-2/3 scripts (eagle/evaluation/gen_ea_answer_vicuna.py
        # @f2f2366) still parse it, default mc_sim_7b_63, and never read it. So: absent, the
        # dynamic tree (EAGLE-2/3); given, that static tree (EAGLE-1).
        parser.add_argument(
            "--tree-choices", type=parse_tree_choices, default=None,
            help="EAGLE-1 static tree instead of the dynamic one: a preset (mc_sim_7b_63, "
            "eagle1_26, chain_N) or a list of top-k rank paths such as '[[0], [1], [0, 0]]' "
            "(default: the dynamic tree; not with --total-token/--depth/--top-k)",
        )  # fmt: skip
    if lookup:
        add_lookup_flags(parser)
    if dtype:
        parser.add_argument(
            "--dtype", choices=DTYPE_CHOICES, default=DEFAULT_DTYPE,
            help="model dtype; auto: bfloat16 on a GPU, on a CPU the faster of bfloat16 and "
            f"float32 for a large matrix product (measured, about 0.1 s) (default: {DEFAULT_DTYPE})",
        )  # fmt: skip
    if device:
        parser.add_argument(
            "--device", default=DEFAULT_DEVICE,
            help="cpu, cuda, cuda:N, or auto: cuda when available, else cpu (default: auto)",
        )  # fmt: skip


LOOKUP_FLAGS = {  # flag -> (LookupSettings field, help)
    "--lookup-max-tokens": ("max_tokens", "most tokens one context continuation drafts"),
    "--lookup-min-ngram": ("min_ngram", "shortest suffix that is matched in the context"),
    "--lookup-max-ngram": ("max_ngram", "longest suffix that is matched (tried first)"),
    "--lookup-matches": ("matches", "most distinct continuations added per step"),
}


def add_lookup_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--lookup``/``--no-lookup`` and the ``LookupSettings`` fields as ``--lookup-*`` flags
    (``eagle.model.lookup``); read by ``model_spec`` into ``ModelSpec.lookup``."""
    from eagle.model.lookup import LookupSettings

    defaults = LookupSettings()
    parser.add_argument(
        "--lookup", action=argparse.BooleanOptionalAction, default=None,
        help="add drafts from the context (n-gram matches of the prompt and the answer so far) "
        "to the EAGLE tree (default: on where the head's tree.json says so; a --lookup-* flag "
        "turns it on)",
    )  # fmt: skip
    for flag, (field, text) in LOOKUP_FLAGS.items():
        parser.add_argument(
            flag, type=int, default=None,
            help=f"{text} (default: the head's tree.json, else {getattr(defaults, field)})",
        )  # fmt: skip


def lookup_spec(args: argparse.Namespace, head: str | None) -> LookupSettings | None:
    """The lookup of parsed ``add_lookup_flags`` flags: ``--no-lookup`` off; ``--lookup`` or
    any ``--lookup-*`` flag on, over the head's ``tree.json`` settings; neither: the head's
    default. ValueError naming the flag for a bad value or ``--no-lookup`` with settings."""
    if not hasattr(args, "lookup"):
        return None
    given = given_lookup_fields(args)
    if args.lookup is False:
        if given:
            raise ValueError("--no-lookup turns the lookup off; drop the --lookup-* flags")
        return None
    stored = shipped.lookup_settings(head) if head is not None else None
    if args.lookup is None and not given and stored is None:
        return None
    return checked_lookup({**(stored or {}), **given})


def given_lookup_fields(args: argparse.Namespace) -> dict[str, int]:
    """The ``LookupSettings`` fields of the ``--lookup-*`` flags that were given."""
    return {
        field: getattr(args, flag_dest(flag))
        for flag, (field, _) in LOOKUP_FLAGS.items()
        if getattr(args, flag_dest(flag), None) is not None
    }


def checked_lookup(fields: dict[str, int]) -> LookupSettings:
    """``LookupSettings(**fields)``; a ValueError names the ``--lookup-*`` flag at fault."""
    from eagle.model.lookup import LookupSettings

    try:
        return LookupSettings(**fields)
    except ValueError as error:
        flag = next((f for f, (name, _) in LOOKUP_FLAGS.items() if name in str(error)), "")
        raise ValueError(f"{flag or '--lookup-*'}: {error}") from error


def add_quantization_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--load-in-8bit`` / ``--load-in-4bit``: the target quantised by bitsandbytes, as in the
    original web UI (SafeAILab/EAGLE eagle/application/webui.py @3cbfb39, both ``store_true``
    and passed to ``from_pretrained``); read by ``model_spec`` into ``ModelSpec.quantization``."""
    bits = parser.add_mutually_exclusive_group()
    for n in (8, 4):
        bits.add_argument(
            f"--load-in-{n}bit", dest="quantization", action="store_const", const=f"{n}bit",
            default=None, help=f"quantise the target to {n} bits with bitsandbytes (needs it "
            "installed and a CUDA GPU; the head stays in --dtype)",
        )  # fmt: skip


# The GPU placement flags of the original evaluation scripts (SafeAILab/EAGLE
# eagle/evaluation/gen_ea_answer_vicuna.py @f2f2366, gen_ea_answer_qwen3.py @3e056a4): the
# questions were split over num_gpus_total // num_gpus_per_model ray workers; --max-gpu-memory
# and --load-in-8bit (store_false there) were parsed and never read. Each maps to why it is
# ignored here.
PLACEMENT_FLAGS = {
    "--num-gpus-per-model": "one process loads one model on --device (spread a large target "
    "with the Python API's device_map='auto')",
    "--num-gpus-total": "there are no ray workers: run one process per GPU, each with its own "
    "--device cuda:N and --question-begin/--question-end",
    "--max-gpu-memory": "the original parsed it and never used it",
    "--load-in-8bit": "the original's evaluation scripts parsed it and never used it",
}


def add_placement_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The original evaluation scripts' GPU placement flags, accepted so their command lines
    run; ``ignored_placement_flags`` says which were given and why they do nothing."""
    for flag in PLACEMENT_FLAGS:
        kind: dict[str, Any] = {"action": "store_true"} if flag == "--load-in-8bit" else {}
        parser.add_argument(
            flag, dest=flag_dest(flag), default=None, **kind,
            help="accepted from the original EAGLE's evaluation scripts and ignored",
        )  # fmt: skip


def ignored_placement_flags(args: argparse.Namespace) -> list[str]:
    """One message per placement flag given on the command line (nothing to do otherwise)."""
    return [
        f"{flag} is accepted for the original EAGLE's command lines and ignored: {reason}"
        for flag, reason in PLACEMENT_FLAGS.items()
        if getattr(args, flag_dest(flag), None) not in (None, False)
    ]


def model_spec(
    args: argparse.Namespace,
    *,
    need_head: bool = True,
    tree: bool = True,
    tree_defaults: Mapping[str, int] | None = None,
) -> ModelSpec:
    """The checked ``ModelSpec`` of parsed ``add_model_flags`` flags; ValueError naming the
    flag and its allowed values.

    ``need_head``: resolve the head (``--ea-model-path``, else the shipped one) and its tree;
    without it only a head that was given is kept, and the tree flags alone count. ``tree``
    False: the parser has no tree flags of ``add_model_flags`` (a command with its own).
    ``tree_defaults``: a command's own tree defaults, over the library's and under the head's
    ``tree.json`` and the flags (the original's evaluation scripts had their own).
    """
    if tree:
        check_values(args, TREE_FLAGS)
    device = resolve_device(args.device)
    head = getattr(args, "ea_model_path", None)
    if need_head and head is None:
        if not is_registered(args.base_model_path):
            raise ValueError(
                f"--ea-model-path is required: no head ships for {args.base_model_path!r} "
                f"(shipped heads exist for: {', '.join(sorted(shipped.SHIPPED))})"
            )
        try:
            head = str(shipped.head_for(args.base_model_path))
        except FileNotFoundError as error:
            raise ValueError(f"--ea-model-path is required: {error}") from error
    settings = {**DEFAULT_TREE, **(tree_defaults or {})}
    if need_head:
        assert head is not None  # given, or the shipped one (or an error above)
        settings.update(shipped.tree_settings(head))
    given = {k: getattr(args, k) for k in settings if tree and getattr(args, k) is not None}
    settings.update(given)
    paths = getattr(args, "tree_choices", None)
    if paths is not None and given:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        raise ValueError(
            f"--tree-choices gives a static tree; {flags} size the dynamic tree: give one or the "
            "other"
        )
    if need_head:
        check_top_k_fits(
            settings["top_k"] if paths is None else checked_static_tree(paths).max_rank, head
        )
    quantization = getattr(args, "quantization", None)
    if quantization is not None:
        from eagle.model.target import BITSANDBYTES_INSTALL, bitsandbytes_installed

        if not bitsandbytes_installed():
            raise ValueError(
                f"--load-in-{quantization} needs bitsandbytes, which is not installed: "
                f"{BITSANDBYTES_INSTALL}"
            )
    return ModelSpec(
        base_model_path=args.base_model_path,
        ea_model_path=head,
        **settings,
        use_eagle3=getattr(args, "use_eagle3", None),
        dtype=resolve_dtype(args.dtype, device),
        device=device,
        tree_choices=paths,
        quantization=quantization,
        lookup=lookup_spec(args, head),
    )


def checked_model_spec(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    need_head: bool = True,
    tree: bool = True,
) -> ModelSpec:
    """``model_spec``, exiting through ``parser.error`` (status 2) instead of raising."""
    try:
        return model_spec(args, need_head=need_head, tree=tree)
    except ValueError as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits


def show_library_logs() -> None:
    """Show the library's INFO messages on stderr, as every command does: the first-use
    conversion of the built-in target, the ``total_token=-1`` measurements."""
    logging.basicConfig(format="%(message)s", stream=sys.stderr)
    logging.getLogger("eagle").setLevel(logging.INFO)


def load_ea_model(spec: ModelSpec) -> EaModel:
    """The ``EaModel`` of ``spec``, in eval mode; a head or target that cannot be loaded exits
    naming its flag (a ``--use-eagle3``/``--no-eagle3`` mismatch included)."""
    from eagle.model.checkpoint import HeadCheckpointError
    from eagle.model.ea_model import EaModel

    if spec.ea_model_path is None:
        raise ValueError("load_ea_model needs a ModelSpec with an ea_model_path")
    show_library_logs()
    try:
        model = EaModel.from_pretrained(
            base_model_path=spec.base_model_path,
            ea_model_path=spec.ea_model_path,
            use_eagle3=spec.use_eagle3,
            tree_choices=None
            if spec.tree_choices is None
            else [list(p) for p in spec.tree_choices],
            lookup=spec.lookup,
            **spec.tree,
            **spec.load_kwargs,
        )
    except HeadCheckpointError as error:
        raise SystemExit(f"--ea-model-path {spec.ea_model_path}: {error}") from error
    except OSError as error:
        raise SystemExit(f"cannot load the models: {error}") from error
    return model.eval()


def load_target(spec: ModelSpec) -> tuple[TargetModel, Any]:
    """(``TargetModel``, tokenizer) of ``spec``'s target, in eval mode; a target that cannot be
    loaded exits naming ``--base-model-path``."""
    from transformers import AutoTokenizer

    from eagle.model.defaults import resolve_model_path
    from eagle.model.target import TargetModel

    show_library_logs()
    try:
        path = resolve_model_path(spec.base_model_path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        target = TargetModel.from_pretrained(path, **spec.load_kwargs)
    except OSError as error:
        raise SystemExit(f"--base-model-path {spec.base_model_path}: {error}") from error
    target.model.eval()
    return target, tokenizer


def flag_dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")
