"""Training: configs, data, models, losses, the learning-rate schedule, the step, the loop,
packed runs and what the loop reports to."""
