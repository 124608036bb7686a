"""What both trainers share: typed YAML configs with CLI overrides, DeepSpeed set-up, atomic checkpoints, logging."""
