"""Named EAGLE-1 static trees, as lists of top-k rank paths from the root.

``eagle1_26`` is the 26-node tree (root + 25 drafted nodes, depth 5) that the original EAGLE-1
release used by default under the name ``mc_sim_7b_63``; both names select it. ``chain_<n>`` is
a single chain of n top-1 drafts (useful on CPUs, where verifying few nodes is cheapest).
"""

from __future__ import annotations

_EAGLE1_26 = (
    # depth 1
    (0,), (1,), (2,), (3,),
    # depth 2
    (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0), (2, 1), (3, 0),
    # depth 3
    (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (0, 2, 0), (0, 2, 1), (1, 0, 0),
    # depth 4
    (0, 0, 0, 0), (0, 0, 0, 1), (0, 0, 0, 2),
    # depth 5
    (0, 0, 0, 0, 0), (0, 0, 0, 0, 1),
)  # fmt: skip

_NAMED = {"eagle1_26": _EAGLE1_26, "mc_sim_7b_63": _EAGLE1_26}


def static_tree(name: str) -> list[list[int]]:
    """The rank paths of a named tree; raises a ValueError listing the names."""
    if name.startswith("chain_") and name[6:].isdigit() and int(name[6:]) > 0:
        return [[0] * d for d in range(1, int(name[6:]) + 1)]
    if name not in _NAMED:
        raise ValueError(f"unknown tree preset {name!r}; choose from {sorted(_NAMED)} or chain_<n>")
    return [list(p) for p in _NAMED[name]]
