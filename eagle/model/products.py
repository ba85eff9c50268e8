"""How a few rows are multiplied by a large weight: ``F.linear`` or weight first.

A tree verify or a draft step multiplies a handful of rows by a large matrix: the target's
``lm_head`` (SmolLM2: 49,152 x 576) and the head's. Some BLAS builds are far slower at that
than at the same product with the operands swapped. Measured on a 2-core AMD EPYC with MKL
2024.2 (torch 2.13, fp32), 49,152 x 576 weight:

==========  =========================  ===========================
rows        ``F.linear(x, W)``          ``(W @ x.T).T`` (weight first)
==========  =========================  ===========================
1           10.6 ms                    10.9 ms
2           20.8 ms                    7.5 ms
4           38.4 ms                    7.4 ms
16          54.2 ms                    23.8 ms
128         156 ms                     116 ms
==========  =========================  ===========================

Both compute the same product (fp32 results differ by summation order only, as ``F.linear``'s
own results do between row counts). ``measure_row_product`` times the two on the device at hand
and ``RowProduct`` applies the faster one to plain ``nn.Linear`` layers with two rows or more;
one row always takes ``F.linear``. Off the CPU, and for weights too small to matter, nothing is
measured and ``F.linear`` is used.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

logger = logging.getLogger(__name__)

PROBE_ROWS = (2, 8, 32)  # the row counts a draft step and a tree verify use
MIN_PROBED_WEIGHT = 1 << 20  # smaller products take microseconds: not worth a measurement
SPEEDUP_NEEDED = 0.8  # weight first must take at most this share of F.linear's time


@dataclass(frozen=True)
class RowProduct:
    """Which product computes ``linear(x)`` for two rows or more.

    ``weight_first``: ``(W @ x.T).T + b`` instead of ``F.linear``. Applies to layers whose type
    is exactly ``nn.Linear``; quantized or otherwise special layers are always called as they
    are.
    """

    weight_first: bool = False

    def __call__(self, linear: nn.Module, x: Tensor) -> Tensor:
        """``linear(x)`` for x [..., K] -> [..., N], computed as chosen."""
        if not self.weight_first or type(linear) is not nn.Linear:
            return linear(x)
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] < 2:
            return linear(x)
        return weight_first(rows, linear.weight, linear.bias).reshape(*x.shape[:-1], -1)


F_LINEAR = RowProduct()  # the default: every product through F.linear


def weight_first(rows: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """rows [M, K] times weight [N, K] transposed, plus bias [N] -> [M, N] (contiguous),
    computed as ``(weight @ rows.T).T``."""
    out = (weight @ rows.t()).t().contiguous()
    return out if bias is None else out + bias


@torch.inference_mode()
def measure_row_product(weight: Tensor, repeats: int = 3) -> RowProduct:
    """Time ``F.linear`` against weight first for ``weight`` [N, K] at ``PROBE_ROWS`` rows on
    its device and dtype; weight first is chosen only where it wins at every probed size.

    Returns the default (``F.linear``) off the CPU and for weights under ``MIN_PROBED_WEIGHT``
    elements. Costs about ``2 * repeats`` products of each size (about 1 s for SmolLM2's
    ``lm_head`` on 2 cores).
    """
    if weight.device.type != "cpu" or weight.numel() < MIN_PROBED_WEIGHT:
        return F_LINEAR
    linear_ms, first_ms = [], []
    for m in PROBE_ROWS:
        x = torch.randn(m, weight.shape[1], dtype=weight.dtype, device=weight.device)
        linear_ms.append(_best_ms(F.linear, (x, weight, None), repeats))
        first_ms.append(_best_ms(weight_first, (x, weight, None), repeats))
    chosen = faster_product(linear_ms, first_ms)
    logger.info(
        "row product for a %d x %d %s weight at %s rows: F.linear %s ms, weight first %s ms -> %s",
        *weight.shape,
        str(weight.dtype).removeprefix("torch."),
        "/".join(map(str, PROBE_ROWS)),
        "/".join(f"{t:.1f}" for t in linear_ms),
        "/".join(f"{t:.1f}" for t in first_ms),
        "weight first" if chosen.weight_first else "F.linear",
    )
    return chosen


def faster_product(linear_ms: list[float], first_ms: list[float]) -> RowProduct:
    """The decision from timings at the same row counts: weight first only where it takes at
    most ``SPEEDUP_NEEDED`` of ``F.linear``'s time at every one of them."""
    wins = [f <= SPEEDUP_NEEDED * lin for f, lin in zip(first_ms, linear_ms, strict=True)]
    return RowProduct(weight_first=bool(wins) and all(wins))


def _best_ms(product, args: tuple, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after one warm-up, in milliseconds."""
    product(*args)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(*args)
        best = min(best, time.perf_counter() - start)
    return best * 1000
