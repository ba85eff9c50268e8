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
  memory of float32, and the dtype the README's commands and numbers use. (On a CPU without
  bf16 instructions float32 is faster; say ``--dtype float32`` there.) Training's loss targets
  are a precision choice of their own (``eagle.train.main --target-dtype``, float32);
- device ``auto``: ``cuda`` when CUDA is available, else ``cpu``; ``cpu``, ``cuda`` and
  ``cuda:N`` pick one. (Spreading a large target over several GPUs is the Python API's
  ``device_map="auto"``.)

``ModelSpec`` is the checked, resolved result, a typed value that a command can also build
directly; its checks raise ValueError naming the flag and its allowed values. The loaders are
for commands: they show the library's INFO messages on stderr (``show_library_logs``: the
first-use conversion of the built-in target, the ``total_token=-1`` measurements) and turn a
model that cannot be loaded into an exit naming the flag.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from eagle.input_checks import TREE_FLAGS, check_device, check_top_k_fits, check_values
from eagle.model import shipped
from eagle.model.defaults import DEFAULT_TARGET, is_registered
from eagle.model.draft import DynamicTree

if TYPE_CHECKING:
    import torch

    from eagle.model.ea_model import EaModel
    from eagle.model.target import TargetModel

DTYPES = ("float32", "bfloat16", "float16")  # names of torch dtypes, the --dtype choices
DEFAULT_DTYPE = "bfloat16"
DEFAULT_DEVICE = "auto"
DEFAULT_TREE = {f.name: f.default for f in fields(DynamicTree)}  # total_token, depth, top_k


@dataclass(frozen=True)
class ModelSpec:
    """Which models a command loads and how: paths, tree, dtype and device, all resolved.

    ``ea_model_path`` is None for a command that loads the target alone; ``device`` is a
    concrete device (``auto`` already decided); ``total_token`` -1 measures on this device.
    """

    base_model_path: str = DEFAULT_TARGET
    ea_model_path: str | None = None
    total_token: int = DEFAULT_TREE["total_token"]
    depth: int = DEFAULT_TREE["depth"]
    top_k: int = DEFAULT_TREE["top_k"]
    use_eagle3: bool | None = None
    dtype: str = DEFAULT_DTYPE
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.device == "auto":
            raise ValueError("ModelSpec.device is a concrete device; resolve_device('auto') first")
        check_device(self.device)
        for flag, bound in TREE_FLAGS.items():
            bound.check(flag, getattr(self, _dest(flag)))
        if self.use_eagle3 not in (None, True, False):
            raise ValueError(f"use_eagle3 must be True, False or None, got {self.use_eagle3!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    @property
    def tree(self) -> dict[str, int]:
        """``total_token``, ``depth`` and ``top_k``, as ``EaModel.from_pretrained`` takes them."""
        return {"total_token": self.total_token, "depth": self.depth, "top_k": self.top_k}


def resolve_device(device: str | None) -> str:
    """The device a ``--device`` value means here: ``auto`` (or None) is cuda when CUDA is
    available, else cpu; anything else must be cpu, cuda or cuda:N present on this machine."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    check_device(device, also=("auto",))
    return device


def add_model_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    head: bool = True,
    tree: bool = True,
    dtype: bool = True,
    device: bool = True,
    target_aliases: tuple[str, ...] = (),
    head_aliases: tuple[str, ...] = (),
) -> None:
    """Add the model flags: target, head and EAGLE variant (``head``), tree (``tree``), dtype
    (``dtype``) and device (``device``). ``*_aliases`` are older spellings a command keeps
    working (``--basepath``)."""
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
        variant.add_argument(
            "--use-eagle3", dest="use_eagle3", action="store_const", const=True, default=None,
            help="require an EAGLE-3 head (default: detect the variant from the head)",
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
    if dtype:
        parser.add_argument(
            "--dtype", choices=DTYPES, default=DEFAULT_DTYPE,
            help=f"model dtype (default: {DEFAULT_DTYPE}; float32 is faster on CPUs without bf16)",
        )  # fmt: skip
    if device:
        parser.add_argument(
            "--device", default=DEFAULT_DEVICE,
            help="cpu, cuda, cuda:N, or auto: cuda when available, else cpu (default: auto)",
        )  # fmt: skip


def model_spec(args: argparse.Namespace, *, need_head: bool = True, tree: bool = True) -> ModelSpec:
    """The checked ``ModelSpec`` of parsed ``add_model_flags`` flags; ValueError naming the
    flag and its allowed values.

    ``need_head``: resolve the head (``--ea-model-path``, else the shipped one) and its tree;
    without it only a head that was given is kept, and the tree flags alone count. ``tree``
    False: the parser has no tree flags of ``add_model_flags`` (a command with its own).
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
    settings = dict(DEFAULT_TREE)
    if need_head:
        settings.update(shipped.tree_settings(head))
    if tree:
        settings.update({k: getattr(args, k) for k in settings if getattr(args, k) is not None})
    if need_head:
        check_top_k_fits(settings["top_k"], head)
    return ModelSpec(
        base_model_path=args.base_model_path,
        ea_model_path=head,
        **settings,
        use_eagle3=getattr(args, "use_eagle3", None),
        dtype=args.dtype,
        device=device,
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
            dtype=spec.torch_dtype,
            device_map=spec.device,
            **spec.tree,
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
        target = TargetModel.from_pretrained(path, dtype=spec.torch_dtype, device_map=spec.device)
    except OSError as error:
        raise SystemExit(f"--base-model-path {spec.base_model_path}: {error}") from error
    target.model.eval()
    return target, tokenizer


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")
