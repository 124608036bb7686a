"""`fgclip-lmm eval-clip`: FG-CLIP's encoder benchmarks on the official data formats.

Protocols: docs/model.md, "Evaluation protocols".

    fgclip-lmm eval-clip --model DIR --bench fgovd|boxcls|retrieval|zeroshot --data PATH [--out DIR]
                         [--batch-size N] [--image-size S] [--tokenizer DIR] [--image-root DIR] ...

`--data` is, per bench: fgovd - an FG-OVD JSONL file or a directory of them (one split per file:
`1_attributes*` hard, `2_attributes*` medium, `3_attributes*` easy, `shuffle_negatives*` trivial);
boxcls - a COCO `instances_*.json`; retrieval - a ShareGPT4V JSON, a DCI annotation directory or a COCO
`captions_*.json`; zeroshot - an ImageFolder root. A synthetic-world root (a directory with `manifest.json`,
written by `fgclip-lmm synth`) is resolved through its manifest. Results go to OUT/<bench>.json and
OUT/<bench>.md (and the table to stdout). Every input problem is reported before the model is loaded where it
can be (missing checkpoint, unwritable OUT, wrong format, missing image); `--on-bad-record skip` counts and drops
bad records instead: the counts and the first messages per reason are printed at the end (and before a "no usable
records" error) and written to OUT/bad_records.json. FG-CLIP 2 checkpoints run the official FG-CLIP 2 protocol
(NaFlex image sizes, box walk for region phrases, long walk at 196, tokenizer attention masks; `encode_fgclip2.py`),
and the report states it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# Light imports only (no torch): `--help` and argument errors answer before the model code is imported.
from fgclip_lmm.constants import DTYPE_NAMES, FGOVD_SPLITS
from fgclip_lmm.data.bad_records import BadRecordPolicy
from fgclip_lmm.errors import InputError, require_writable_dir, run_command

from .formats import DataFormatError, fgovd_split_name, read_coco_instances, read_fgovd
from .formats_global import RETRIEVAL_FORMATS, read_image_folder, read_retrieval
from .templates import BUILTIN, load_templates

if TYPE_CHECKING:
    from .benches import BenchResult
    from .synth import BenchDataConfig

BENCHES = ("fgovd", "boxcls", "retrieval", "zeroshot")
REPORT_FILE = "bad_records.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fgclip-lmm eval-clip", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="checkpoint directory or hub id: FG-CLIP (ours, official, OpenAI "
                   "CLIP) or FG-CLIP 2 (ours, official qihoo360/fg-clip2-*, SigLIP 2 NaFlex)")
    p.add_argument("--bench", required=True, choices=BENCHES)
    p.add_argument("--data", required=True,
                   help="data file / directory in the bench's official format, or a synth root")
    p.add_argument("--out", default=None, help="output directory (default runs/eval-clip/<bench>)")
    p.add_argument("--batch-size", type=int, default=32, help="images per vision forward")
    p.add_argument("--text-batch-size", type=int, default=256, help="texts per text forward")
    p.add_argument("--image-size", type=int, default=None, help="squash-resize side; default the checkpoint's own")
    p.add_argument("--patch-budgets", type=int, nargs="+", default=None,
                   help="FG-CLIP 2 (NaFlex): per-image patch budgets (default the official 128 256 576 784 1024)")
    p.add_argument("--tokenizer", default=None, help="tokenizer directory when the checkpoint has no tokenizer files")
    p.add_argument("--image-root", default=None, help="directory image paths are relative to (default: per format)")
    p.add_argument("--templates", default="openai80",
                   help=f"boxcls/zeroshot prompts: {', '.join(BUILTIN)} or a file with one template per line")
    p.add_argument("--retrieval-format", default="auto", choices=("auto", *RETRIEVAL_FORMATS))
    p.add_argument("--text-path", default="auto", choices=("auto", "long", "short"),
                   help="retrieval captions: long = 248-token path, short = 77; auto: long for sharegpt4v/dci")
    p.add_argument("--captions-per-image", type=int, default=5, help="COCO captions retrieval: first N per image")
    p.add_argument("--max-items", type=int, default=None,
                   help="retrieval: first N items (ShareGPT4V default 1000, the official protocol); zeroshot: subset")
    p.add_argument("--classnames", default=None, help="zeroshot: class-name map (JSON, or 'dir [idx] name' lines)")
    p.add_argument("--synth-set", default=None,
                   help="with a synthetic-world root: fgovd/boxcls/zeroshot test|heldout (default test), "
                        "retrieval long|short (default long)")
    p.add_argument("--exclude-crowd", action="store_true", help="boxcls: leave out iscrowd annotations")
    p.add_argument("--on-bad-record", default="error", choices=("error", "skip"))
    p.add_argument("--truncation", default="truncate", choices=("truncate", "error"),
                   help="texts over the path's token budget: cut (counted; the official behaviour) or fail")
    p.add_argument("--device", default=None, help="default cuda when available, else cpu")
    p.add_argument("--dtype", default="float32", choices=DTYPE_NAMES)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding images")
    p.add_argument("--max-image-pixels", type=int, default=None,
                   help="larger images are the bad record image_too_large (default 50 MP or $FGCLIP_MAX_IMAGE_PIXELS; "
                        "0 = no limit)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _fgovd_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"--data {path}: no such FG-OVD file or directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".jsonl" and p.is_file())
    if not files:
        raise DataFormatError(f"{path}: no *.jsonl FG-OVD split files")
    rank = {name: i for i, name in enumerate(FGOVD_SPLITS)}
    return sorted(files, key=lambda f: (rank.get(fgovd_split_name(f), len(rank)), f.name))


def read_data(args, spec: BenchDataConfig, policy: BadRecordPolicy):
    """Read and validate the bench's data and check its image files: (data, image mask, records read)."""
    from .benches import box_image_mask, prepare_images
    from .synth import BenchDataConfig, read_synth_zeroshot

    path = spec.path
    image_root = Path(args.image_root).expanduser() if args.image_root else spec.image_root
    if not path.exists():
        raise FileNotFoundError(f"--data {path}: no such file or directory")
    if args.bench == "fgovd":
        data = read_fgovd(list(spec.files) or _fgovd_files(path), image_root, policy)
        return data, box_image_mask(data.boxes, policy), len(data.positives)
    if args.bench == "boxcls":
        if not path.is_file():
            raise DataFormatError(f"--data {path}: boxcls needs a COCO instances_*.json file")
        data = read_coco_instances(path, image_root, policy, args.exclude_crowd)
        return data, box_image_mask(data.boxes, policy), len(data.labels)
    if args.bench == "retrieval":
        data = read_retrieval(path, args.retrieval_format, image_root, policy, args.max_items, args.captions_per_image)
        return data, prepare_images(data.images, data.image_records, policy), len(data.images)
    if spec.manifest is not None:
        data = read_synth_zeroshot(BenchDataConfig(path, image_root))
    else:
        data = read_image_folder(path, Path(args.classnames) if args.classnames else None, args.max_items)
    return data, prepare_images(data.images, [str(p) for p in data.images], policy), len(data.images)


def output_dir(args) -> Path:
    return Path(args.out) if args.out else Path("runs") / "eval-clip" / args.bench


def _nothing_left(message: str, policy: BadRecordPolicy, out: Path | None) -> InputError:
    """Print and write the bad-record report, then the one-line error to raise."""
    report = policy.report
    print(report.summary(), file=sys.stderr)
    where = ""
    if out is not None:
        where = f"; report in {report.write_json(out / REPORT_FILE)}"
    return InputError(f"{message}: {report.one_line()}{where}")


def run(args, out: Path | None = None) -> tuple[BenchResult, dict]:
    """Evaluate; `out` (checked writable once the inputs exist) receives the bad-record report on failure."""
    from fgclip_lmm.devices import pick_device, torch_dtype

    from .benches import run_boxcls, run_fgovd, run_retrieval, run_zeroshot
    from .encode import (
        EncoderConfig,
        check_model_path,
        has_tokenizer_files,
        load_checkpoint,
        make_encoder,
    )
    from .synth import resolve_data

    started = time.time()
    settings = EncoderConfig(batch_size=args.batch_size, text_batch_size=args.text_batch_size,
                             image_size=args.image_size, device=str(pick_device(args.device)),
                             dtype=torch_dtype(args.dtype), workers=args.workers, truncation=args.truncation,
                             progress=not args.no_progress, max_pixels=args.max_image_pixels,
                             patch_budgets=tuple(args.patch_budgets) if args.patch_budgets else None)
    if args.batch_size < 1 or args.text_batch_size < 1:
        raise InputError("--batch-size and --text-batch-size must be >= 1")
    templates = load_templates(args.templates) if args.bench in ("boxcls", "zeroshot") else None
    policy = BadRecordPolicy(args.on_bad_record)
    check_model_path(args.model)  # before reading data: a missing checkpoint fails first and fast
    spec = resolve_data(args.bench, Path(args.data).expanduser(), args.synth_set)
    if not spec.path.exists():
        raise FileNotFoundError(f"--data {spec.path}: no such file or directory")
    if out is not None:
        require_writable_dir(out)  # before any real work: results must have somewhere to go
    data, image_ok, n_records = read_data(args, spec, policy)
    if n_records == 0 or not bool(image_ok.any()):
        raise _nothing_left(f"--data {args.data}: no usable records", policy, out)
    tokenizer_source = args.tokenizer
    if tokenizer_source is None and spec.tokenizer is not None and not has_tokenizer_files(args.model):
        tokenizer_source = str(spec.tokenizer)  # the synthetic world's own CLIP tokenizer
    model, tokenizer = load_checkpoint(args.model, tokenizer_source, settings)
    encoder = make_encoder(model, tokenizer, settings, policy)
    if args.bench == "fgovd":
        result = run_fgovd(encoder, data, image_ok)
    elif args.bench == "boxcls":
        result = run_boxcls(encoder, data, image_ok, templates)
    elif args.bench == "retrieval":
        result = run_retrieval(encoder, data, image_ok, args.text_path)
    else:
        result = run_zeroshot(encoder, data, image_ok, templates)
    if not any(row.get("n", 0) for row in result.rows.values()):
        raise _nothing_left(f"--data {args.data}: nothing was evaluated (every image failed to load)", policy, out)
    report = policy.report
    meta = {
        "bench": args.bench, "model": args.model, "tokenizer": tokenizer_source or args.model,
        "data": [str(s) for s in data.sources], "synth_set": spec.synth_set,
        "settings": {"image_size": encoder.image_size, "batch_size": args.batch_size, "dtype": args.dtype,
                     "device": settings.device, "truncation": args.truncation, "on_bad_record": args.on_bad_record,
                     "resize": encoder.resize, "texts": encoder.text_protocol},
        "info": result.info,
        "results": result.rows,
        "skipped": {"total": report.total_skipped, "by_reason": report.skipped, "examples": report.examples},
        "bad_records": {**report.to_dict(), "truncated": encoder.stats.truncated_texts,
                        "total_truncated": sum(encoder.stats.truncated_texts.values())},
        "texts": {"unique": encoder.stats.unique_texts, "truncated": encoder.stats.truncated_texts},
        "records_read": n_records,
        "seconds": round(time.time() - started, 3),
    }
    return result, meta


def _fmt(value) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def to_markdown(result: BenchResult, meta: dict) -> str:
    s = meta["settings"]
    data = ", ".join(f"`{d}`" for d in meta["data"])
    info = ", ".join(f"{k} {v}" for k, v in result.info.items() if not isinstance(v, dict))
    image = f"{s['image_size']}px ({s['resize']})" if s["image_size"] else s["resize"]
    header = f"model `{meta['model']}` · data {data} · image {image} · {s['texts']} · {info}"
    lines = [f"## eval-clip: {result.bench}", "", header, "",
             "| " + " | ".join(["", *result.columns]) + " |", "|" + "---|" * (len(result.columns) + 1)]
    lines += ["| " + " | ".join([name, *(_fmt(row.get(c, "")) for c in result.columns)]) + " |"
              for name, row in result.rows.items()]
    lines.append("")
    lines.append("Percentages in [0, 100]; accuracy = top1, R@k = recall at k.")
    skipped = meta["skipped"]
    if skipped["total"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(skipped["by_reason"].items()))
        lines.append(f"**Skipped {skipped['total']} bad records ({reasons}); metrics cover the rest only.**")
    truncated = {k: v for k, v in meta["texts"]["truncated"].items() if v}
    if truncated:
        lines.append("Texts truncated to the path's token budget: " + ", ".join(f"{k} {v}" for k,
                                                                                v in truncated.items()))
    return "\n".join(lines) + "\n"


def _json_safe(value):
    """NaN (a metric over zero samples) becomes null so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_outputs(result: BenchResult, meta: dict, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_FILE).write_text(json.dumps(meta["bad_records"], indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    json_path, md_path = out / f"{result.bench}.json", out / f"{result.bench}.md"
    json_path.write_text(json.dumps(_json_safe(meta), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    md_path.write_text(to_markdown(result, meta), encoding="utf-8")
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    return run_command("eval-clip", _main, list(sys.argv[1:] if argv is None else argv))


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    out = output_dir(args)
    result, meta = run(args, out)
    json_path, md_path = write_outputs(result, meta, out)
    report = meta["bad_records"]
    print(to_markdown(result, meta))
    if report["total_skipped"] or report["total_truncated"]:
        print(f"{_report_text(meta)}\nbad-record report: {out / REPORT_FILE}")
    print(f"wrote {json_path} and {md_path}")
    return 0


def _report_text(meta: dict) -> str:
    report = meta["bad_records"]
    lines = [f"bad records skipped: {report['total_skipped']}"]
    lines += [f"  {reason}: {count}" for reason, count in report["skipped"].items()]
    lines += [f"    e.g. {example}" for examples in report["examples"].values() for example in examples]
    lines.append(f"texts truncated: {sum(meta['texts']['truncated'].values())}")
    lines += [f"  {field}: {count}" for field, count in meta["texts"]["truncated"].items() if count]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
