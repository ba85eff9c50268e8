"""The ``eagle-features/1`` data folder: the one reader and writer of its files.

``eagle.ge_data`` writes a folder through this module and ``eagle.train`` reads it through this
module; nothing else opens these files. A folder DATA holds:

- ``manifest.json`` (``manifest-partK.json`` for worker K of a split run): a ``Manifest``, i.e.
  the target's identity (``TargetInfo``), the settings the data was made with, the shard list
  (``ShardEntry``) and its totals. As JSON::

    {"format": "eagle-features/1",
     "target": {"name_or_path", "fingerprint", "num_layers", "hidden_size", "vocab_size"},
     "template", "max_len", "dtype", "feature_layers": {"hidden": [-1] | [], "aux": [i, j, k]},
     "target_topk" (only when > 0), "regenerated": {...} | null, "source": {...},
     "num_samples", "num_tokens", "num_loss_tokens",
     "shards": [{"file", "samples", "tokens", "loss_tokens"}],
     "complete", "created", "updated", "eagle_version"}

- ``shard-NNNNN.safetensors`` (``shard-partK-NNNNN.safetensors``): samples concatenated along
  the token axis, ``input_ids`` int32 [T], ``loss_mask`` uint8 [T], ``offsets`` int64 [n+1]
  (sample i is rows ``offsets[i]:offsets[i+1]``), and as captured ``hidden`` [T, H] (the
  target's post-norm last state), ``aux`` [T, 3H] (three target layers, the EAGLE-3 input),
  ``topk_ids`` int32 [T, K] / ``topk_probs`` fp16 [T, K] (the target's K most likely next
  tokens, most likely first, full-softmax probabilities); features in bf16 or fp16. Metadata
  ``ids``: the sample ids as a JSON list.
- ``vocab.safetensors``: a ``Vocabulary`` (``counts`` int64 [V], ``argmax_counts`` int64 [V]
  when counted on the target's argmax, ``d2t`` int64 [Vd], ``t2d`` bool [V]; metadata
  ``fingerprint``, ``draft_vocab_size``, ``vocab_size``, ``counted_on``).

Design choices:
- The manifest is parsed into typed dataclasses and written back from them, by the same code.
  A missing or unknown key, a value of the wrong type, totals that disagree with the shard list
  or a shard name with a folder in it is a ``DataFormatError`` naming the file.
- The fingerprint is a sha256 over the target's config (as JSON, sorted keys, without the keys
  that change with how the model was loaded: dtype, transformers version) and the first rows of
  its input embedding rounded to bf16, so the same model loaded in fp32 or bf16 matches and
  another model with the same shapes does not. Data or a vocabulary made for another target is
  refused (``check_target``, ``read_vocab``).
- Every file is written to a temporary name and renamed, and the manifest is rewritten after
  every shard, so a manifest only ever lists shards that are completely on disk.
- Resuming compares the recorded settings with the new run's; any difference is an error that
  names the flag, because mixing settings in one folder would silently corrupt the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor

from eagle import __version__

FORMAT = "eagle-features/1"
MANIFEST_FILE = "manifest.json"
VOCAB_FILE = "vocab.safetensors"
FINGERPRINT_ROWS = 16
_LOAD_DEPENDENT_KEYS = ("dtype", "torch_dtype", "transformers_version", "_name_or_path")
# manifest key -> the flags that set it (for error messages)
SETTING_FLAGS = {
    "target": "--base-model-path",
    "template": "--template",
    "max_len": "--max-len",
    "dtype": "--feature-dtype",
    "feature_layers": "--variants / --aux-layers / --target-topk",
    "target_topk": "--target-topk",
    "regenerated": "--regenerate / --regen-*",
    "source": "--data / --offset / --seed / --length-policy / --exclude-*",
}


class DataFormatError(ValueError):
    """A data folder that is missing, of another format, malformed or made for another target."""


class ManifestMismatchError(DataFormatError):
    """A data folder already holds features made with other settings."""


# -- file names ---------------------------------------------------------------------------------


def part_manifest_name(part: int | None) -> str:
    """``manifest.json`` for a single run, ``manifest-partK.json`` for worker K."""
    return MANIFEST_FILE if part is None else f"manifest-part{part}.json"


def shard_name(index: int, part: int | None = None) -> str:
    """``shard-NNNNN.safetensors`` for a single run, ``shard-partK-NNNNN...`` for worker K."""
    prefix = "shard-" if part is None else f"shard-part{part}-"
    return f"{prefix}{index:05d}.safetensors"


# -- the target's identity ----------------------------------------------------------------------


def target_fingerprint(config_json: str, embedding: Tensor) -> str:
    """sha256 hex of the config JSON (load-dependent keys removed) and the first embedding rows.

    config_json: ``config.to_json_string()``; embedding: the input embedding weight [V, H].
    """
    config = json.loads(config_json)
    for key in _LOAD_DEPENDENT_KEYS:
        config.pop(key, None)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    rows = embedding[:FINGERPRINT_ROWS].detach().to("cpu", torch.bfloat16).contiguous()
    digest.update(rows.view(torch.int16).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TargetInfo:
    """The target model the features were captured from."""

    name_or_path: str  # as given on the command line (not compared)
    fingerprint: str  # target_fingerprint
    num_layers: int
    hidden_size: int
    vocab_size: int


def target_info(target: Any, name_or_path: str) -> dict[str, Any]:
    """The manifest's ``target`` entry, as JSON, for a ``TargetModel`` (``eagle.model.target``)."""
    fingerprint = target_fingerprint(target.config.to_json_string(), target.embed_tokens.weight)
    info = TargetInfo(
        name_or_path, fingerprint, target.num_layers, target.hidden_size, target.vocab_size
    )
    return dataclasses.asdict(info)


def check_target(
    manifest: Manifest, fingerprint: str, vocab_size: int, hidden_size: int, num_layers: int
) -> None:
    """Raise ``DataFormatError`` unless the data comes from this target: same shapes and
    fingerprint (config and embedding, not the dtype)."""
    ours = manifest.target
    expected = {
        "vocab_size": (ours.vocab_size, vocab_size),
        "hidden_size": (ours.hidden_size, hidden_size),
        "num_layers": (ours.num_layers, num_layers),
        "fingerprint": (ours.fingerprint, fingerprint),
    }
    wrong = {key: pair for key, pair in expected.items() if pair[0] != pair[1]}
    if wrong:
        details = ", ".join(
            f"{k}: data {str(a)[:12]} vs target {str(b)[:12]}" for k, (a, b) in wrong.items()
        )
        raise DataFormatError(
            f"the data in {manifest.directory} was made with another target "
            f"({ours.name_or_path!r}); {details}"
        )


# -- the manifest -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureLayers:
    """Which target ``hidden_states`` the shards store."""

    hidden: tuple[int, ...]  # (-1,): the post-norm last state (EAGLE-1 feature); (): not stored
    aux: tuple[int, ...] | None  # the three EAGLE-3 layers, or None without EAGLE-3 features

    def to_json(self) -> dict[str, list[int]]:
        return {"hidden": list(self.hidden), **({"aux": list(self.aux)} if self.aux else {})}


@dataclass(frozen=True)
class ShardEntry:
    file: str  # shard file name inside the folder
    samples: int
    tokens: int
    loss_tokens: int


@dataclass
class Manifest:
    """What a data folder holds and what made it; ``directory`` is where it lives (not stored).

    The writer appends shards and sets ``complete``; the totals follow from the shard list.
    """

    directory: Path
    target: TargetInfo
    template: str
    max_len: int
    dtype: str  # storage dtype of the features: "bfloat16" or "float16"
    feature_layers: FeatureLayers
    regenerated: dict[str, Any] | None  # the regeneration settings, None without regeneration
    source: dict[str, Any]  # the selection flags (data file, offset, seed, part, ...)
    target_topk: int = 0  # K of the stored top-K target distribution (0: not stored)
    shards: list[ShardEntry] = field(default_factory=list)
    complete: bool = False
    created: str = ""
    updated: str = ""
    eagle_version: str = __version__

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_tokens(self) -> int:
        return sum(s.tokens for s in self.shards)

    @property
    def num_loss_tokens(self) -> int:
        return sum(s.loss_tokens for s in self.shards)

    @property
    def aux_layers(self) -> tuple[int, ...] | None:
        """Target ``hidden_states`` indices of the EAGLE-3 features (None: not stored)."""
        return self.feature_layers.aux

    @property
    def has_hidden(self) -> bool:
        """Whether the shards store the post-norm last hidden state."""
        return bool(self.feature_layers.hidden)

    @property
    def shard_files(self) -> list[str]:
        return [s.file for s in self.shards]

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``manifest.json`` (see the module docstring)."""
        return {
            "format": FORMAT,
            "target": dataclasses.asdict(self.target),
            "template": self.template,
            "max_len": self.max_len,
            "dtype": self.dtype,
            "feature_layers": self.feature_layers.to_json(),
            **({"target_topk": self.target_topk} if self.target_topk else {}),
            "regenerated": self.regenerated,
            "source": self.source,
            "num_samples": self.num_samples,
            "num_tokens": self.num_tokens,
            "num_loss_tokens": self.num_loss_tokens,
            "shards": [dataclasses.asdict(s) for s in self.shards],
            "complete": self.complete,
            "created": self.created,
            "updated": self.updated,
            "eagle_version": self.eagle_version,
        }

    def settings(self) -> dict[str, Any]:
        """The recorded settings (the keys of ``SETTING_FLAGS``) as JSON, for comparison."""
        stored = self.to_json()
        return {key: stored.get(key) for key in SETTING_FLAGS}


_MANIFEST_KEYS: dict[str, Any] = {
    "format": str, "target": dict, "template": str, "max_len": int, "dtype": str,
    "feature_layers": dict, "target_topk": int, "regenerated": (dict, type(None)),
    "source": dict, "num_samples": int, "num_tokens": int, "num_loss_tokens": int,
    "shards": list, "complete": bool, "created": str, "updated": str, "eagle_version": str,
}  # fmt: skip
_TARGET_KEYS = {
    "name_or_path": str, "fingerprint": str, "num_layers": int, "hidden_size": int,
    "vocab_size": int,
}  # fmt: skip
_SHARD_KEYS = {"file": str, "samples": int, "tokens": int, "loss_tokens": int}


def _checked(
    record: Any, kinds: dict[str, Any], where: str, optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """``record`` as a dict with exactly the keys of ``kinds`` (less any ``optional`` one), each
    of its type; raises DataFormatError naming ``where`` and the key."""
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - set(kinds))
    missing = sorted(set(kinds) - set(record) - set(optional))
    if unknown or missing:
        raise DataFormatError(f"{where}: unknown keys {unknown}, missing keys {missing}")
    for key, value in record.items():
        kind = kinds[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise DataFormatError(f"{where}: {key} has the wrong type ({value!r})")
    return record


def _layers(record: Any, where: str) -> tuple[int, ...]:
    if not isinstance(record, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in record
    ):
        raise DataFormatError(f"{where}: expected a list of layer indices, got {record!r}")
    return tuple(record)


def _parse_manifest(directory: Path, record: Any, where: str) -> Manifest:
    """Parse and check a manifest's JSON object (``where`` names it in errors)."""
    if not isinstance(record, dict):
        raise DataFormatError(
            f"{where} is not a manifest written by eagle.ge_data (a JSON "
            f"{type(record).__name__}, not an object)"
        )
    if record.get("format") != FORMAT:
        raise DataFormatError(
            f"{where} has format {record.get('format')!r}, expected {FORMAT!r}; "
            "write new data to another folder"
        )
    raw = _checked(record, _MANIFEST_KEYS, where, optional=("target_topk",))
    target = TargetInfo(**_checked(raw["target"], _TARGET_KEYS, f"{where}: target"))
    layers = _checked(raw["feature_layers"], {"hidden": list, "aux": list}, where, ("aux",))
    aux = _layers(layers["aux"], f"{where}: feature_layers.aux") if "aux" in layers else None
    shards = [ShardEntry(**_checked(s, _SHARD_KEYS, f"{where}: shard")) for s in raw["shards"]]
    for shard in shards:
        if Path(shard.file).name != shard.file or shard.file in ("", ".", ".."):
            raise DataFormatError(f"{where}: shard file {shard.file!r} is not a file name")
    manifest = Manifest(
        directory=Path(directory),
        target=target,
        template=raw["template"],
        max_len=raw["max_len"],
        dtype=raw["dtype"],
        feature_layers=FeatureLayers(_layers(layers["hidden"], f"{where}: hidden"), aux),
        regenerated=raw["regenerated"],
        source=raw["source"],
        target_topk=raw.get("target_topk", 0),
        shards=shards,
        complete=raw["complete"],
        created=raw["created"],
        updated=raw["updated"],
        eagle_version=raw["eagle_version"],
    )
    for key in ("num_samples", "num_tokens", "num_loss_tokens"):
        if raw[key] != getattr(manifest, key):
            raise DataFormatError(
                f"{where}: {key} is {raw[key]} but its shards add up to {getattr(manifest, key)}"
            )
    return manifest


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_manifest(directory: str | Path, settings: dict[str, Any]) -> Manifest:
    """An empty manifest for the given settings (JSON, the keys of ``SETTING_FLAGS``)."""
    stamp = _now()
    record = {
        "format": FORMAT, **settings, "num_samples": 0, "num_tokens": 0, "num_loss_tokens": 0,
        "shards": [], "complete": False, "created": stamp, "updated": stamp,
        "eagle_version": __version__,
    }  # fmt: skip
    return _parse_manifest(Path(directory), record, "new manifest")


def existing_manifest(directory: str | Path, name: str = MANIFEST_FILE) -> Manifest | None:
    """The manifest ``directory/name``, or None when there is none; DataFormatError when the
    file is not a manifest of this format."""
    path = Path(directory) / name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise DataFormatError(
            f"{path} is not a manifest written by eagle.ge_data ({error!r})"
        ) from error
    return _parse_manifest(Path(directory), record, str(path))


def read_manifest(directory: str | Path, name: str = MANIFEST_FILE) -> Manifest:
    """The manifest ``directory/name``; DataFormatError when it is missing or malformed."""
    manifest = existing_manifest(directory, name)
    if manifest is None:
        raise DataFormatError(f"no {name} in {directory}: generate data with eagle.ge_data")
    return manifest


def write_manifest(manifest: Manifest, name: str = MANIFEST_FILE) -> None:
    """Write ``manifest.directory/name`` atomically, stamping ``updated``."""
    manifest.updated = _now()
    with _replacing(manifest.directory / name) as temporary:
        temporary.write_text(json.dumps(manifest.to_json(), indent=1))


@contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path next to ``path`` that replaces it once the block has written it."""
    temporary = path.with_name(path.name + ".tmp")
    yield temporary
    os.replace(temporary, path)


def _comparable(key: str, value: Any) -> Any:
    if key == "target" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "name_or_path"}  # path may be spelt apart
    if key == "regenerated" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "file"}  # one file per worker
    return value


def check_settings(stored: Manifest, new: Manifest, where: Path) -> None:
    """Raise ``ManifestMismatchError`` naming the flag of the first setting that differs."""
    ours, theirs = stored.settings(), new.settings()
    for key, flags in SETTING_FLAGS.items():
        old, value = _comparable(key, ours[key]), _comparable(key, theirs[key])
        if old != value:
            raise ManifestMismatchError(
                f"{where} already holds data made with other {flags} settings "
                f"({key}: stored {json.dumps(old)}, this run {json.dumps(value)}); resume with "
                "the same settings, or write to another --outdir"
            )


def open_manifest(directory: Path, name: str, settings: dict[str, Any]) -> Manifest:
    """The existing manifest ``directory/name`` checked against ``settings``, or a new one."""
    new = new_manifest(directory, settings)
    existing = existing_manifest(directory, name)
    if existing is None:
        return new
    check_settings(existing, new, directory / name)
    return existing


def merge_manifests(parts: Sequence[Manifest]) -> Manifest:
    """One manifest for the union of worker manifests (same settings, disjoint shards)."""
    if not parts:
        raise ValueError("no worker manifests to merge")
    first = parts[0]
    for part in parts[1:]:
        check_settings(
            part, dataclasses.replace(first, source=part.source), Path("worker manifest")
        )
    regenerated = first.regenerated
    if regenerated:
        regenerated = {**regenerated, "file": [(p.regenerated or {}).get("file") for p in parts]}
    return dataclasses.replace(
        first,
        source={**first.source, "part": None},
        regenerated=regenerated,
        shards=[shard for part in parts for shard in part.shards],
        complete=all(part.complete for part in parts),
        created=min(part.created for part in parts),
    )


# -- shards -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TopK:
    ids: Tensor  # [L, K] int32, most likely first
    probs: Tensor  # [L, K] float16


@dataclass(frozen=True)
class StoredSample:
    """One sample as a shard stores it."""

    id: str
    input_ids: Tensor  # [L] int32
    loss_mask: Tensor  # [L] uint8
    hidden: Tensor | None  # [L, H] storage dtype, or None when not stored
    aux: Tensor | None  # [L, 3H] storage dtype, or None without EAGLE-3 features
    topk: TopK | None = None  # the target's top-K distribution, or None


def pack_samples(samples: Sequence[StoredSample]) -> dict[str, Tensor]:
    """Concatenate samples into the shard tensors (see the module docstring)."""
    lengths = torch.tensor([0] + [s.input_ids.numel() for s in samples], dtype=torch.long)
    tensors = {
        "input_ids": torch.cat([s.input_ids for s in samples]).to(torch.int32),
        "loss_mask": torch.cat([s.loss_mask for s in samples]).to(torch.uint8),
        "offsets": lengths.cumsum(0),
    }
    optional = {
        "hidden": [s.hidden for s in samples],
        "aux": [s.aux for s in samples],
        "topk_ids": [None if s.topk is None else s.topk.ids for s in samples],
        "topk_probs": [None if s.topk is None else s.topk.probs for s in samples],
    }
    for name, parts in optional.items():
        present = [part for part in parts if part is not None]
        if present and len(present) < len(parts):  # one shard: a field for all samples or none
            raise ValueError(
                f"{name} is stored for {len(present)} of {len(parts)} samples: a shard holds it "
                "for every sample or for none"
            )
        if present:
            tensors[name] = torch.cat(present).contiguous()
    return tensors


def write_shard(
    directory: Path, name: str, tensors: dict[str, Tensor], ids: Sequence[str]
) -> ShardEntry:
    """Write packed samples (``pack_samples``) with their ids atomically; their manifest entry."""
    with _replacing(directory / name) as temporary:
        save_file(tensors, temporary, metadata={"ids": json.dumps(list(ids))})
    tokens, loss_tokens = tensors["input_ids"].numel(), int(tensors["loss_mask"].sum())
    return ShardEntry(name, len(ids), tokens, loss_tokens)


@contextmanager
def open_shard(directory: str | Path, name: str) -> Iterator[Any]:
    """``safe_open`` of one shard; whatever fails while reading it (a missing, truncated or
    corrupt file, a missing tensor, a token id outside the vocabulary) is a ValueError that
    names the shard."""
    path = Path(directory) / name
    try:
        with safe_open(path, "pt") as shard:
            yield shard
    except (OSError, SafetensorError, KeyError, ValueError, RuntimeError) as error:
        raise DataFormatError(
            f"shard {path}: {error}; delete it and its manifest entry, then rerun eagle.ge_data "
            "to capture it again"
        ) from error


def shard_offsets(directory: str | Path, name: str) -> list[int]:
    """Sample boundaries of one shard: sample i is rows offsets[i]:offsets[i+1]."""
    with open_shard(directory, name) as shard:
        return shard.get_tensor("offsets").tolist()


def stored_ids(manifest: Manifest) -> list[str]:
    """Ids of the samples in the manifest's shards, in storage order."""
    ids: list[str] = []
    for name in manifest.shard_files:
        with open_shard(manifest.directory, name) as shard:
            listed = (shard.metadata() or {}).get("ids")
        if listed is None:
            raise DataFormatError(
                f"{manifest.directory / name} does not list its sample ids, so this run cannot "
                "resume it; write to another --outdir"
            )
        ids.extend(json.loads(listed))
    return ids


# -- the vocabulary file ------------------------------------------------------------------------


@dataclass(frozen=True)
class Vocabulary:
    """The data's token statistics and its EAGLE-3 draft vocabulary (``eagle.ge_data.vocab``)."""

    counts: Tensor  # int64 [V]: occurrences of each id at loss-masked positions
    d2t: Tensor  # int64 [Vd]: target id of draft id i is i + d2t[i]
    t2d: Tensor  # bool [V]: whether a target id is in the draft vocabulary
    fingerprint: str  # of the target the counts come from
    argmax_counts: Tensor | None = None  # int64 [V]: the target's argmax before assistant tokens

    @property
    def counted_on(self) -> str:
        """What the draft vocabulary was ranked on."""
        return "data_tokens" if self.argmax_counts is None else "target_argmax"


def write_vocab(directory: str | Path, vocab: Vocabulary) -> Path:
    """Write ``directory/vocab.safetensors`` atomically."""
    path = Path(directory) / VOCAB_FILE
    tensors = {"counts": vocab.counts.long(), "d2t": vocab.d2t.long(), "t2d": vocab.t2d.bool()}
    if vocab.argmax_counts is not None:
        tensors["argmax_counts"] = vocab.argmax_counts.long()
    metadata = {
        "fingerprint": vocab.fingerprint,
        "draft_vocab_size": str(int(vocab.d2t.shape[0])),
        "vocab_size": str(int(vocab.counts.shape[0])),
        "counted_on": vocab.counted_on,
    }
    with _replacing(path) as temporary:
        save_file(tensors, temporary, metadata=metadata)
    return path


def read_vocab(manifest: Manifest) -> Vocabulary | None:
    """The vocabulary file of the manifest's folder, or None when there is none.

    DataFormatError when it was made for another target than the manifest's.
    """
    path = manifest.directory / VOCAB_FILE
    if not path.exists():
        return None
    with safe_open(path, "pt") as handle:
        recorded = (handle.metadata() or {}).get("fingerprint")
    expected = manifest.target.fingerprint
    if recorded != expected:
        raise DataFormatError(
            f"{path} was made for another target (fingerprint {str(recorded)[:12]}, the "
            f"manifest has {expected[:12]}); rebuild it with python -m eagle.ge_data.vocab "
            "--outdir DATA"
        )
    tensors = load_file(path)
    return Vocabulary(
        tensors["counts"], tensors["d2t"], tensors["t2d"], recorded, tensors.get("argmax_counts")
    )
