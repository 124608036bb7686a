"""Entry point for the DeepSpeed launcher: `deepspeed [--num_gpus N | --hostfile H] train_lmm/train.py --config CFG`.

DeepSpeed's launcher appends `--local_rank=N`; LOCAL_RANK is also in the environment, so it is dropped here.
"""
import sys

from fgclip_lmm.train.lmm_trainer import main

if __name__ == "__main__":
    sys.exit(main([a for a in sys.argv[1:] if not a.startswith("--local_rank")]))
