"""Decoding methods timed by the evaluation, behind one small interface.

- ``eagle``: ``EaModel.eagenerate`` (speculative decoding with the draft head).
- ``baseline``: ``EaModel.naivegenerate`` (one token per step through the same target and cache).
- ``lookup``: drafts from the context alone (prompt lookup decoding) through the same loop.
- ``eagle_lookup``: the EAGLE tree with drafts from the context as extra branches.
- ``hf_generate``: ``transformers`` ``generate()``, a reference point.
- ``hf_prompt_lookup``: ``generate(prompt_lookup_num_tokens=N)``, a draft-free reference point.

Every method takes the library's ``GenerationConfig`` (sampling and limits; one for the whole
run) and returns the generated ids cut after the first EOS (which counts) by the decode loop's
own ``generate.stop_point``, so all answer files count tokens identically. Target steps are the
decode loop's ``StepResult.steps`` for EaModel (the prefill included) and the number of target
forward calls for ``generate()``. Each method's ``record`` holds its own settings for the
answer files (the EAGLE tree, the lookup settings, the prompt lookup length). ``eagle`` never
adds context drafts, whatever the model's default, so the methods stay distinct; the lookup
methods use ``ModelSpec.lookup`` (the ``--lookup-*`` flags), else ``LookupSettings()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from eagle.model.draft import DynamicTree
from eagle.model.generate import GenerationConfig, stop_point
from eagle.model.loading import ModelSpec, load_ea_model, load_target
from eagle.model.lookup import LookupSettings
from eagle.model.tree import StaticTree

METHOD_NAMES = ("eagle", "baseline", "lookup", "eagle_lookup", "hf_generate", "hf_prompt_lookup")
EA_METHODS = ("eagle", "baseline", "lookup", "eagle_lookup")
HEAD_METHODS = ("eagle", "eagle_lookup")  # methods that draft with the head


@dataclass(frozen=True)
class Generation:
    """What one generation produced: ids after the prompt and target forward passes."""

    tokens: list[int]
    steps: int


class Method(Protocol):
    """A decoding method: prompt ids in, a ``Generation`` out."""

    device: torch.device
    record: dict[str, Any]  # the method's own settings, written to its answer file

    def generate(self, prompt: list[int], config: GenerationConfig) -> Generation: ...


class EaMethod:
    """One of ``EA_METHODS``: EaModel's decode loop with the head, the context, both or neither."""

    def __init__(
        self,
        ea_model: Any,
        name: str,
        eos_ids: frozenset[int],
        lookup: LookupSettings | None = None,
    ) -> None:
        if name not in EA_METHODS:
            raise ValueError(f"EaMethod name must be one of {EA_METHODS}, got {name!r}")
        self._model = ea_model
        self._use_draft = name in HEAD_METHODS
        settings = None
        if name in ("lookup", "eagle_lookup"):
            settings = lookup or LookupSettings()
        self._lookup: LookupSettings | bool = settings or False  # False: none, whatever the default
        self.device = ea_model.target.device
        self.record: dict[str, Any] = {}
        if self._use_draft:
            self.record["tree"] = tree_record(ea_model.tree)
        if settings is not None:
            self.record["lookup"] = dataclasses.asdict(settings)
        self._eos_ids = eos_ids

    def generate(self, prompt: list[int], config: GenerationConfig) -> Generation:
        """Generate with EaModel; steps are the target forward passes, the prefill included."""
        input_ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        config = dataclasses.replace(config, lookup=self._lookup)
        *_, last = self._model.generate_steps(input_ids, use_draft=self._use_draft, config=config)
        tokens = last.ids[0, len(prompt) :].tolist()
        count, _ = stop_point(tokens, self._eos_ids)
        return Generation(tokens[:count], last.steps)


class HFGenerateMethod:
    """``transformers`` ``generate()``, optionally with prompt lookup decoding."""

    def __init__(
        self, model: Any, eos_ids: frozenset[int], prompt_lookup: int | None = None
    ) -> None:
        """``model``: a transformers model with ``generate()`` (``AutoModelForCausalLM``'s;
        ``PreTrainedModel`` itself has no ``generate`` in transformers 5)."""
        self._model = model
        self._eos_ids = eos_ids
        self._prompt_lookup = prompt_lookup
        self.device: torch.device = model.device
        self.record = {} if prompt_lookup is None else {"prompt_lookup_tokens": prompt_lookup}

    def generate(self, prompt: list[int], config: GenerationConfig) -> Generation:
        """Generate with ``generate()``; steps = the target's forward calls."""
        room = config.max_length - len(prompt)
        if room <= 0:
            raise ValueError(f"prompt of {len(prompt)} tokens leaves no room under max_length")
        input_ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        with _count_forward_calls(self._model) as calls:
            output = self._model.generate(
                input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=min(config.max_new_tokens, room),
                eos_token_id=sorted(self._eos_ids),
                pad_token_id=min(self._eos_ids) if self._eos_ids else 0,
                prompt_lookup_num_tokens=self._prompt_lookup,
                **config.sampling.generate_kwargs(),
            )
        tokens = output[0, len(prompt) :].tolist()
        count, _ = stop_point(tokens, self._eos_ids)
        return Generation(tokens[:count], calls[0])


def tree_record(tree: DynamicTree | StaticTree) -> dict[str, Any]:
    """A JSON-ready description of an EaModel tree: the dynamic tree's sizes, or the paths."""
    if isinstance(tree, StaticTree):
        return {"static_paths": [list(path) for path in tree.paths]}
    return dataclasses.asdict(tree)


@contextmanager
def _count_forward_calls(model: torch.nn.Module) -> Iterator[list[int]]:
    """Count the model's forward calls inside the block (a one-element list)."""
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    handle = model.register_forward_hook(count)
    try:
        yield calls
    finally:
        handle.remove()


def build_methods(
    names: list[str], spec: ModelSpec, prompt_lookup_tokens: int = 10
) -> tuple[dict[str, Method], Any]:
    """Load the models once (``eagle.model.loading``) and return ``{name: method}`` and the
    tokenizer.

    With a draft head the target is loaded through ``EaModel`` and ``generate()`` methods run on
    its target (the same weights); without one only ``hf_*`` methods can run. Every method
    counts tokens up to the first of the stop ids EaModel's decode loop uses.
    """
    check_methods(names, spec)
    from eagle.model.target import collect_eos_ids

    if spec.ea_model_path is not None:
        ea_model = load_ea_model(spec)
        target, tokenizer = ea_model.target, ea_model.tokenizer
        eos_ids = frozenset(ea_model.eos_ids)
    else:
        ea_model, (target, tokenizer) = None, load_target(spec)
        eos_ids = frozenset(collect_eos_ids(target.model, tokenizer))
    methods: dict[str, Method] = {}
    for name in names:
        if name in EA_METHODS:
            methods[name] = EaMethod(ea_model, name, eos_ids, spec.lookup)
        else:
            lookup = prompt_lookup_tokens if name == "hf_prompt_lookup" else None
            methods[name] = HFGenerateMethod(target.model, eos_ids, lookup)
    return methods, tokenizer


def check_methods(names: list[str], spec: ModelSpec) -> None:
    """Raise ValueError for unknown methods, or a method that needs a head without one."""
    unknown = sorted(set(names) - set(METHOD_NAMES))
    if unknown:
        raise ValueError(f"unknown --method {unknown}; choose from {', '.join(METHOD_NAMES)}")
    if spec.ea_model_path is None and set(names) & set(EA_METHODS):
        raise ValueError(f"--ea-model-path is required by the methods {', '.join(EA_METHODS)}")
