"""The run directory: file formats (one cell rule), atomic writes, the directory lock, the
writer's guard and verified checkpoints. No torch at import."""
