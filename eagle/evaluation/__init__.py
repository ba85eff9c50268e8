"""Speed and acceptance evaluation (MT-bench, HumanEval, custom question files)."""
