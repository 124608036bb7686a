"""Time to first output of `fgclip-lmm` commands: `--help` and an argument error, before vs after a change.

Each case is one fresh process (`fgclip-lmm ARGS`, the installed console script, else the same entry point through
`python -c`), run against two source trees: `before` = `git archive BASELINE fgclip_lmm` unpacked in a temporary
directory, `after` = this checkout. The two trees are timed interleaved (A, B, B, A, ...) for every case, and the
table gives median wall seconds and the ratio before / after. The goal is that `--help` and argument errors of
every non-trainer command answer within 2 s: torch, transformers, DeepSpeed and lmms-eval are imported only after
the arguments parse.

    python benchmarks/bench_cli_startup.py                    # baseline: the commit before the lazy imports
    python benchmarks/bench_cli_startup.py --baseline HEAD~3 --repeats 5
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_BASELINE = "f8ca5a4"  # main before the lazy-import change (the "package: layout" commit)
# (label, argv): every non-trainer command's --help, then argument errors that need no files.
CASES: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("synth --help", ["synth", "--help"]),
    ("convert --help", ["convert", "--help"]),
    ("assemble --help", ["assemble", "--help"]),
    ("merge-lora --help", ["merge-lora", "--help"]),
    ("eval-clip --help", ["eval-clip", "--help"]),
    ("eval-lmm --help", ["eval-lmm", "--help"]),
    ("datagen --help", ["datagen", "--help"]),
    ("demo --help", ["demo", "--help"]),
    ("tiny-llm --help", ["tiny-llm", "--help"]),
    ("synth: bad --images", ["synth", "--out", "x", "--images", "many"]),
    ("assemble: missing --llm", ["assemble", "--tower", "fgclip:x", "--out", "y"]),
    ("eval-clip: unknown bench", ["eval-clip", "--model", "m", "--bench", "nope", "--data", "d"]),
    ("eval-lmm: --batch-size 0", ["eval-lmm", "--model", "m", "--tasks", "fgclip_pope", "--out", "o",
                                  "--batch-size", "0"]),
    ("merge-lora: bad --dtype", ["merge-lora", "--base", "b", "--adapter", "a", "--out", "o", "--dtype", "int3"]),
]
ENTRY = "import sys; sys.argv[0] = 'fgclip-lmm'; from fgclip_lmm.cli import main; sys.exit(main())"


def command(argv: list[str]) -> list[str]:
    script = Path(sys.executable).parent / "fgclip-lmm"
    return [str(script), *argv] if script.is_file() else [sys.executable, "-c", ENTRY, *argv]


def run_once(tree: Path, argv: list[str]) -> tuple[float, int, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(command(argv), env=env, capture_output=True, text=True, timeout=300, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - start
    first = (proc.stdout or proc.stderr).strip().splitlines()
    return seconds, proc.returncode, first[0][:60] if first else ""


def baseline_tree(ref: str, root: Path) -> Path:
    archive = root / "baseline.tar"
    subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), ref, "fgclip_lmm"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(root / "tree", filter="data")
    return root / "tree"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks/bench_cli_startup.py", description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref of the `before` tree (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per case and tree (default 3)")
    p.add_argument("--only-after", action="store_true", help="time this checkout only (no baseline)")
    p.add_argument("--out", default="runs/bench/bench_cli_startup.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"after": REPO} if args.only_after else {"before": baseline_tree(args.baseline, Path(tmp)),
                                                          "after": REPO}
        rows = []
        for label, case in CASES:
            times: dict[str, list[float]] = {name: [] for name in trees}
            codes: dict[str, int] = {}
            for r in range(args.repeats):
                for name in trees if r % 2 == 0 else reversed(list(trees)):
                    seconds, code, _ = run_once(trees[name], case)
                    times[name].append(seconds)
                    codes[name] = code
            row = {"case": label, **{f"{n} s": statistics.median(t) for n, t in times.items()},
                   **{f"{n} rc": c for n, c in codes.items()}}
            if "before" in trees:
                row["before/after"] = row["before s"] / row["after s"]
            rows.append(row)
            print("  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    columns = list(rows[0])
    widths = [max(len(c), *(len(f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])) for r in rows)) for c in columns]
    print("\n" + "  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join((f"{r[c]:.2f}" if isinstance(r[c], float) else str(r[c])).ljust(w) for c, w in zip(columns, widths)))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"baseline": None if args.only_after else args.baseline, "repeats": args.repeats,
                               "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
