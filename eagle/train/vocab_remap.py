"""Move a trained EAGLE-3 head onto another draft vocabulary, keeping what it learned.

An EAGLE-3 head scores only its draft vocabulary: ``lm_head.weight`` [Vd, H] has one row per
draft token, and ``d2t`` / ``t2d`` say which target ids those are. A head whose vocabulary was
counted on the wrong text (the v1 SmolLM2 head: ShareGPT's tokens, where ``\\n\\n`` is rare)
can never propose the target tokens it lacks: 8.2% of the target's greedy next tokens on its
own answers were outside v1's vocabulary, a hard cap on acceptance at every draft step.

``remap_lm_head`` builds the rows of a new vocabulary:

- a token in both vocabularies keeps its trained row;
- a new token's row is predicted from the *target's* ``lm_head`` row of that token through a
  linear map fitted (ridge least squares) on the shared tokens, then scaled so that the
  predicted rows of the shared tokens have the trained rows' mean norm. On v1 the fitted map
  predicts held-out trained rows with cosine 0.82, so a new token starts close to where
  training would put it instead of at random.

``remap_head`` applies it to a head folder (``config.json`` + ``model.safetensors``) and writes
another; the config is unchanged (the draft vocabulary keeps its size). Pure tensor functions
take the maps in the checkpoint's form: target id of draft id i is ``i + d2t[i]``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from eagle.model.checkpoint import CONFIG_FILE, SAFETENSORS_FILE

RIDGE = 1.0  # held-out cosine 0.824 at 1e-3, 0.824 at 1.0, 0.826 at 10 on v1: not sensitive


def draft_target_ids(d2t: Tensor) -> Tensor:
    """d2t [Vd] (offsets) -> int64 [Vd]: the target id of each draft id."""
    return torch.arange(d2t.shape[0]) + d2t.long()


def fit_row_map(target_rows: Tensor, head_rows: Tensor, ridge: float = RIDGE) -> Tensor:
    """Ridge least squares A [H_t, H] with ``target_rows @ A ~ head_rows``.

    target_rows [n, H_t], head_rows [n, H] (the same n tokens) -> A [H_t, H], in float64.
    """
    x, y = target_rows.double(), head_rows.double()
    gram = x.T @ x + ridge * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, x.T @ y)


def remap_lm_head(
    lm_head: Tensor, old_d2t: Tensor, new_d2t: Tensor, target_lm_head: Tensor
) -> tuple[Tensor, int]:
    """The head's ``lm_head`` rows for a new draft vocabulary.

    lm_head [Vd_old, H] (trained rows), old_d2t [Vd_old], new_d2t [Vd_new], target_lm_head
    [V, H_t] -> (rows [Vd_new, H] in lm_head's dtype, number of new tokens). Rows of tokens in
    both vocabularies are copied; the others are predicted from the target's rows (module
    docstring). Raises ValueError when the vocabularies share fewer tokens than H_t (too few
    to fit the map).
    """
    old_ids, new_ids = draft_target_ids(old_d2t), draft_target_ids(new_d2t)
    vocab_size = target_lm_head.shape[0]
    old_row = torch.full((vocab_size,), -1, dtype=torch.long)
    old_row[old_ids] = torch.arange(old_ids.shape[0])
    source = old_row[new_ids]  # [Vd_new]: the trained row of each new draft id, or -1
    shared = source >= 0
    shared_ids = new_ids[shared]
    if int(shared.sum()) < target_lm_head.shape[1]:
        raise ValueError(
            f"the vocabularies share {int(shared.sum())} tokens, fewer than the target width "
            f"{target_lm_head.shape[1]}: too few to fit the row map"
        )
    trained = lm_head[source[shared]].double()
    row_map = fit_row_map(target_lm_head[shared_ids], trained)
    predicted_shared = target_lm_head[shared_ids].double() @ row_map
    scale = trained.norm(dim=1).mean() / predicted_shared.norm(dim=1).mean()
    rows = torch.empty(new_ids.shape[0], lm_head.shape[1], dtype=torch.float64)
    rows[shared] = trained
    fresh = ~shared
    rows[fresh] = target_lm_head[new_ids[fresh]].double() @ row_map * scale
    return rows.to(lm_head.dtype), int(fresh.sum())


def remap_head(
    source: str | Path, output: str | Path, new_d2t: Tensor, new_t2d: Tensor, target_lm_head: Tensor
) -> int:
    """Write ``output``: the EAGLE-3 head folder ``source`` moved onto the vocabulary
    (new_d2t [Vd], new_t2d [V]). Vd must equal the head's draft vocabulary size. Returns the
    number of tokens that are new to the head."""
    source, output = Path(source), Path(output)
    state = load_file(source / SAFETENSORS_FILE)
    if "d2t" not in state:
        raise ValueError(f"{source} has no d2t: not an EAGLE-3 head with a reduced vocabulary")
    if new_d2t.shape != state["d2t"].shape or new_t2d.shape != state["t2d"].shape:
        raise ValueError(
            f"the new maps have shapes d2t {tuple(new_d2t.shape)}, t2d {tuple(new_t2d.shape)}; "
            f"{source} has {tuple(state['d2t'].shape)}, {tuple(state['t2d'].shape)}"
        )
    if not torch.equal(new_t2d.bool().nonzero().squeeze(1), draft_target_ids(new_d2t)):
        raise ValueError("new_d2t and new_t2d disagree (t2d must mark exactly d2t's target ids)")
    rows, fresh = remap_lm_head(
        state["lm_head.weight"], state["d2t"], new_d2t, target_lm_head.detach().cpu()
    )
    state["lm_head.weight"] = rows
    state["d2t"] = new_d2t.to(state["d2t"].dtype)
    state["t2d"] = new_t2d.to(state["t2d"].dtype)
    output.mkdir(parents=True, exist_ok=True)
    save_file(state, output / SAFETENSORS_FILE)
    shutil.copyfile(source / CONFIG_FILE, output / CONFIG_FILE)
    (output / "remap.json").write_text(json.dumps({"source": str(source), "new_tokens": fresh}))
    return fresh
