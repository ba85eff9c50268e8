"""EAGLE models: the target adapter, draft heads, trees, verification and the decode loop."""
