"""The training loop and what it needs: optimizers, schedules, timesteps and loss weighting, EMA, checkpoints."""
