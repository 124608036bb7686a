"""Trainer start-up latency: how long `fgclip-lmm train-clip --help`, `train-lmm --help` and config errors take to
answer (the goal is < 2 s: the config is parsed and validated before torch, transformers and DeepSpeed load).

Each command runs as a fresh process through the venv's `fgclip-lmm` console script, with PYTHONPATH pointing at
the tree under test. `--before DIR` adds a second tree (an older checkout, e.g.
`git archive f8ca5a4 | tar -x -C /tmp/before`), timed interleaved with this one; the table gives the medians per
tree and their ratio. This tree's exit codes are checked (0 for help, 2 for a config error) so a crash cannot look
fast; the older tree's are recorded as they were (at f8ca5a4, `train-clip --help` crashed with exit 1 after
importing torch: a shadowed variable in its help text).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from common import REPO, base_parser, finish, interleaved, median, ratio, setup, table

SCRIPT = Path(sys.executable).parent / "fgclip-lmm"
GOAL_S = 2.0
# name -> (argv, expected exit code)
COMMANDS = {
    "train-clip --help": (["train-clip", "--help"], 0),
    "train-clip --config tiny_stage1 --help": (["train-clip", "--config", "tiny_stage1", "--help"], 0),
    "train-lmm --help": (["train-lmm", "--help"], 0),
    "train-lmm --micro_batch_size -3": (["train-lmm", "--micro_batch_size", "-3"], 2),
    "train-clip --config no_such_preset": (["train-clip", "--config", "no_such_preset"], 2),
}


def runner(tree: Path, argv: list[str], expected: int | None, codes: list[int]):
    """A call running `fgclip-lmm ARGV` on `tree`; appends its exit code to `codes`, checks it unless None."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}

    def call() -> None:
        proc = subprocess.run([str(SCRIPT), *argv], env=env, cwd=tree, capture_output=True, text=True, timeout=300,
                              check=False)
        codes.append(proc.returncode)
        if expected is not None and proc.returncode != expected:
            raise RuntimeError(f"{tree}: fgclip-lmm {' '.join(argv)} exited {proc.returncode}, expected {expected}:"
                               f" {proc.stderr[-500:]}")
    return call


def main() -> None:
    parser = base_parser("bench_cli_startup", __doc__, ["cli"])
    parser.add_argument("--before", type=Path, default=None, help="an older tree to compare with (interleaved)")
    args = parser.parse_args()
    args.repeats = args.repeats or 3
    device = setup(args)
    trees = {"after": REPO, **({"before": args.before.resolve()} if args.before else {})}
    rows, results = [], {}
    for name, (argv, expected) in COMMANDS.items():
        codes: dict[str, list[int]] = {label: [] for label in trees}
        calls = {label: runner(tree, argv, expected if label == "after" else None, codes[label])
                 for label, tree in trees.items()}
        times = interleaved(calls, device, warmup=args.warmup, repeats=args.repeats)
        results[name] = {"seconds": times, "exit_codes": codes}
        row = {"command": f"fgclip-lmm {name}", "after_s": median(times["after"]),
               "goal_met": median(times["after"]) < GOAL_S}
        if "before" in times:
            row.update(before_s=median(times["before"]), before_exit=sorted(set(codes["before"])),
                       speedup=ratio(median(times["before"]), median(times["after"])))
        rows.append(row)
    finish("bench_cli_startup", args, device, {"trees": {k: str(v) for k, v in trees.items()}, "times": results,
                                               "rows": rows},
           table(rows, title=f"trainer start-up, median of {args.repeats} fresh processes (goal < {GOAL_S} s)"))


if __name__ == "__main__":
    main()
