"""Draft-head training (EAGLE-1 feature regression, EAGLE-3 training-time test)."""
