"""fgjax: JAX/Flax research code for the fine-grained knowledge of vision-language models."""

__version__ = "0.1.0"
