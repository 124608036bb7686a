"""Both trainers: `train-clip` and `train-lmm` run one loop (`loop.py`) over a task (`clip_task.py`, `lmm_task.py`),
configured by typed dataclasses (`*_config.py`) through one loader (`config_io.py`); `command.py` is the light
CLI body that validates everything before torch loads."""
