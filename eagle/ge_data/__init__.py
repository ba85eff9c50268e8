"""Data generation for draft-head training (ShareGPT rendering, feature capture)."""
