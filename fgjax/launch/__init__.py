"""Launchers: local multi-process runs (see also launch/ for TPU VM and SLURM scripts)."""
