"""The miniature study: orchestration of stages, grid and report."""
