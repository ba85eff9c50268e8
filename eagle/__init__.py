"""eagle: lossless speculative decoding with EAGLE-1/2/3 draft heads for Hugging Face models."""

__version__ = "0.1.0"
