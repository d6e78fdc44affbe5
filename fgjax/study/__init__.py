"""The miniature study: orchestration of stages, grid and report."""

from pathlib import Path

DEFAULT_CONFIG = str(Path(__file__).parents[2] / "configs" / "study" / "mini.py")
