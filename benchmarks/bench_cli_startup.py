"""Command start-up latency: how long `fgclip-lmm --help`, every command's `--help` and argument / config errors take
to answer (the goal is < 2 s: arguments and configs are parsed and validated before torch, transformers,
DeepSpeed and lmms-eval load).

Each command runs as a fresh process through the venv's `fgclip-lmm` console script, with PYTHONPATH pointing at
the tree under test. `--before DIR` (an older checkout, e.g. `git archive f8ca5a4 | tar -x -C /tmp/before`) or
`--baseline REF` (the same, done here in a temporary directory) adds a second tree, timed interleaved with this
one; the table gives the medians per tree and their ratio. This tree's exit codes are checked (0 for help, 2 for an
argument or config error) so a crash cannot look fast; the older tree's are recorded as they were (at f8ca5a4,
`train-clip --help` crashed with exit 1 after importing torch, and `tiny-llm` did not exist: exit 2).

    python benchmarks/bench_cli_startup.py --baseline f8ca5a4
"""
from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from common import REPO, base_parser, finish, interleaved, median, ratio, setup, table

SCRIPT = Path(sys.executable).parent / "fgclip-lmm"
GOAL_S = 2.0
# name -> (argv, expected exit code)
COMMANDS = {
    "--help": (["--help"], 0),
    **{f"{name} --help": ([name, "--help"], 0)
       for name in ("synth", "convert", "assemble", "merge-lora", "eval-clip", "eval-lmm", "datagen", "demo",
                    "tiny-llm")},
    "synth --images many": (["synth", "--out", "x", "--images", "many"], 2),
    "assemble (no --llm)": (["assemble", "--tower", "fgclip:x", "--out", "y"], 2),
    "eval-clip --bench nope": (["eval-clip", "--model", "m", "--bench", "nope", "--data", "d"], 2),
    "eval-lmm --batch-size 0": (["eval-lmm", "--model", "m", "--tasks", "fgclip_pope", "--out", "o",
                                 "--batch-size", "0"], 2),
    "merge-lora --dtype int3": (["merge-lora", "--base", "b", "--adapter", "a", "--out", "o", "--dtype", "int3"], 2),
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


def unpack(ref: str, root: Path) -> Path:
    """The package tree of git `ref`, unpacked under `root`."""
    archive = root / "before.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), ref, "fgclip_lmm"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root / "tree", filter="data")
    return root / "tree"


def main() -> None:
    parser = base_parser("bench_cli_startup", __doc__, ["cli"])
    parser.add_argument("--before", type=Path, default=None, help="an older tree to compare with (interleaved)")
    parser.add_argument("--baseline", default=None, help="a git ref to compare with (unpacked to a temporary dir)")
    args = parser.parse_args()
    args.repeats = args.repeats or 3
    device = setup(args)
    with tempfile.TemporaryDirectory() as tmp:
        before = unpack(args.baseline, Path(tmp)) if args.baseline else args.before
        trees = {"after": REPO, **({"before": before.resolve()} if before else {})}
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
           table(rows, title=f"command start-up, median of {args.repeats} fresh processes (goal < {GOAL_S} s)"))


if __name__ == "__main__":
    main()
