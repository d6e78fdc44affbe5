"""Training: config-driven pretraining ("align") and instruction tuning with freeze toggles,
sharded over device meshes, with exact resume. Entry point: `fgjax.main`."""
