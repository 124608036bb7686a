"""`fgclip-lmm demo`: the whole pipeline on the synthetic world, then `report.md` / `report.html` with plots."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from .config import PRESETS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgclip-lmm demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, type=Path, help="default runs/demo (fgclip), runs/demo-fgclip2")
    parser.add_argument("--encoder", default="fgclip", choices=["fgclip", "fgclip2"],
                        help="fgclip: CLIP vs FG-CLIP towers; fgclip2: SigLIP 2 NaFlex vs FG-CLIP 2 towers")
    parser.add_argument("--tiny", action="store_true", help="the < 3 minute preset (CI)")
    parser.add_argument("--images", type=int, default=None, help="override the world size")
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from completed stages")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tqdm.auto import (
        tqdm,  # the pipeline (torch) is imported only after the arguments parse
    )

    from .pipeline import DemoPaths, build_stages
    from .stages import StageRunner

    cfg = PRESETS["tiny" if args.tiny else "default"]
    cfg = replace(cfg, encoder=args.encoder)
    if args.images:
        cfg = replace(cfg, images=args.images)
    if args.out is None:
        args.out = Path("runs/demo" if args.encoder == "fgclip" else f"runs/demo-{args.encoder}")
    args.out.mkdir(parents=True, exist_ok=True)
    paths, runner = DemoPaths(args.out), StageRunner(args.out)
    start = time.perf_counter()
    stages = build_stages(cfg, paths, runner)
    if not args.report_only:
        with tqdm(total=len(stages), desc="demo", unit="stage", dynamic_ncols=True) as bar:
            runner.run_stages(stages, bar)
    from .report import write_report

    report = write_report(cfg, paths, runner, [s.name for s in stages], wall_seconds=time.perf_counter() - start)
    print(f"report: {report} ({time.perf_counter() - start:.0f} s)")
    return 0
