"""`fgclip-lmm synth --out DIR --images N --seed S --size PX`: generate the synthetic fine-grained world.

Writes images, every training and benchmark file, both tokenizers and `DIR/manifest.json` (its keys are
documented in `fgclip_lmm.data.synth.generate`). Prints the elapsed time and the dataset statistics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgclip-lmm synth", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output directory (must be empty unless --overwrite)")
    parser.add_argument("--images", type=int, default=1000, help="number of images over all splits (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="world seed; same seed -> byte-identical output")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--workers", type=int, default=2, help="drawing processes (default 2)")
    parser.add_argument("--overwrite", action="store_true", help="replace a previous world in --out")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from fgclip_lmm.data.synth.generate import (  # torch: only after the arguments parse
        SynthConfig,
        generate,
    )

    config = SynthConfig(
        out=args.out,
        images=args.images,
        seed=args.seed,
        size=args.size,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    start = time.perf_counter()
    try:
        manifest = generate(config)
    except (FileExistsError, ValueError) as error:
        print(f"fgclip-lmm synth: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(f"wrote {manifest['num_images']} images at {config.size} px to {config.out} in {elapsed:.1f} s")
    print(json.dumps({"splits": manifest["splits"], "stats": manifest["stats"]}, indent=2))
    return 0
