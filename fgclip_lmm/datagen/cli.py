"""`fgclip-lmm datagen STEP ...`: build FineHARD-style data from a folder of images, one command per step.

    recaption  --images DIR --out captions.json --model VLM          long + short captions
    ground     --input captions.json --images DIR --out grounded.json --detector OWLV2
    negatives  --input grounded.json --out finehard.json --model LLM  (or --rules-only)
    check      DATA [--tokenizer TOK] [--images DIR]                   statistics + validation
    merge      --out OUT.json                                          join the ranks' progress

Every step resumes where it stopped (finished items are skipped), shows a progress bar, and shards over the
processes of `torchrun` / `accelerate launch` (RANK / WORLD_SIZE). Prompts accept `@path` to read a file.
Exit status: 0 done (or this rank done, others pending), 2 bad arguments or input (one line; --debug for the
traceback).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from fgclip_lmm.constants import DTYPE_NAMES
from fgclip_lmm.datagen.runner import stats_path
from fgclip_lmm.errors import InputError, run_command

STEPS = ("recaption", "ground", "negatives", "check", "merge")


def _text(value: str) -> str:
    return Path(value[1:]).read_text(encoding="utf-8").strip() if value.startswith("@") else value


def _common(parser: argparse.ArgumentParser, batch_size: int) -> None:
    parser.add_argument("--out", required=True, help="output FineHARD JSON array (progress in OUT.parts/)")
    parser.add_argument("--batch-size", type=int, default=batch_size, help=f"items per batch (default {batch_size})")
    parser.add_argument("--device", default=None,
                        help="torch device (default cuda:$LOCAL_RANK, else cpu); 'auto' spreads one model over "
                             "all GPUs")
    parser.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_NAMES])
    parser.add_argument("--on-bad-record", default="skip", choices=["skip", "error"],
                        help="bad input records / images: count and skip (default), or stop")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--overwrite", action="store_true", help="discard earlier progress for --out (one process)")
    parser.add_argument("--allow-paths-outside-root", action="store_true",
                        help="read f_path values that are absolute or leave --images (default: bad record)")
    parser.add_argument("--max-image-pixels", type=int, default=None,
                        help="larger images are the bad record image_too_large (default 50 MP or "
                             "$FGCLIP_MAX_IMAGE_PIXELS; 0 = no limit)")


def build_parser() -> argparse.ArgumentParser:
    # Light on purpose: the step modules (torch, transformers) are imported only after the arguments parse, so
    # prompts default to None here and mean the step's own default (`DEFAULT_*_PROMPT`, `NEG_PROMPT`).
    parser = argparse.ArgumentParser(prog="fgclip-lmm datagen", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n", 2)[2])
    steps = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    rec = steps.add_parser("recaption", help="long + short captions with an image-text-to-text model")
    rec.add_argument("--images", required=True, help="image folder; f_path is written relative to it")
    rec.add_argument("--input", default=None, help="records with f_path[, short_caption] (default: every image)")
    rec.add_argument("--model", required=True,
                     help="AutoModelForImageTextToText checkpoint, e.g. llava-hf/llava-1.5-7b-hf")
    rec.add_argument("--long-prompt", type=_text, default=None,
                     help="long-caption prompt or @file (default: recaption.DEFAULT_LONG_PROMPT)")
    rec.add_argument("--short-prompt", type=_text, default=None,
                     help="short-caption prompt or @file (default: recaption.DEFAULT_SHORT_PROMPT)")
    rec.add_argument("--short-source", choices=["generate", "input"], default="generate",
                     help="generate the short caption, or keep the input record's short_caption")
    rec.add_argument("--max-new-tokens", type=int, default=320)
    rec.add_argument("--short-max-new-tokens", type=int, default=48)
    rec.add_argument("--min-words", type=int, default=20, help="shorter long captions are degenerate")
    rec.add_argument("--short-min-words", type=int, default=3)
    rec.add_argument("--max-retries", type=int, default=2, help="sampled retries of a degenerate caption")
    rec.add_argument("--retry-temperature", type=float, default=0.8)
    rec.add_argument("--seed", type=int, default=0)
    _common(rec, 8)

    gr = steps.add_parser("ground", help="region phrases + open-vocabulary boxes (OWLv2 / Grounding DINO)")
    gr.add_argument("--input", required=True, help="FineHARD items with captions (the recaption output)")
    gr.add_argument("--images", required=True, help="image root the f_path values are relative to")
    gr.add_argument("--detector", required=True, help="e.g. google/owlv2-base-patch16-ensemble")
    gr.add_argument("--phrases", choices=["rules", "llm"], default="rules", help="phrase source (default rules)")
    gr.add_argument("--phrase-model", default=None, help="chat LLM for --phrases llm")
    gr.add_argument("--max-phrases", type=int, default=10)
    gr.add_argument("--threshold", type=float, default=0.4, help="keep boxes scoring above this (paper: 0.4)")
    gr.add_argument("--nms-iou", type=float, default=0.5)
    gr.add_argument("--max-boxes", type=int, default=4, help="boxes per image (the official trainer uses 4)")
    gr.add_argument("--max-boxes-per-phrase", type=int, default=1)
    gr.add_argument("--min-box-side", type=float, default=0.01, help="normalised minimum width and height")
    gr.add_argument("--text-threshold", type=float, default=0.25, help="Grounding DINO text-span threshold")
    gr.add_argument("--drop-empty", action="store_true", help="reject images without boxes instead of keeping them")
    _common(gr, 8)

    neg = steps.add_parser("negatives", help="exactly K attribute-changing hard negatives per box")
    neg.add_argument("--input", required=True, help="FineHARD items with boxes (the ground output)")
    source = neg.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="chat LLM, e.g. meta-llama/Llama-3.1-8B-Instruct")
    source.add_argument("--rules-only", action="store_true", help="lexicon attribute swaps only, no LLM")
    neg.add_argument("--images", default=None, help="image root; when given, records with missing images are rejected")
    neg.add_argument("--num-negatives", type=int, default=10)
    neg.add_argument("--prompt", type=_text, default=None,
                     help="prompt with {phrase} ({k}, {noun}) or @file (default: negatives.NEG_PROMPT)")
    neg.add_argument("--max-new-tokens", type=int, default=256)
    neg.add_argument("--llm-batch-size", type=int, default=32, help="phrases per generate call")
    neg.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    neg.add_argument("--seed", type=int, default=0)
    _common(neg, 16)

    chk = steps.add_parser("check", help="statistics + validation of a FineHARD set")
    chk.add_argument("data", help="FineHARD JSON file, folder, or .txt list of files")
    chk.add_argument("--tokenizer", default=None, help="count tokens with this tokenizer (default: words)")
    chk.add_argument("--images", default=None, help="image root; when given, missing images are rejected")
    chk.add_argument("--num-negatives", type=int, default=10)
    chk.add_argument("--max-anns", type=int, default=4)
    chk.add_argument("--short-caption-prefix", default="a photo of ",
                     help="prepended to short captions, as in training")
    chk.add_argument("--out", default=None, help="also write the report as JSON")
    chk.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    chk.add_argument("--allow-paths-outside-root", action="store_true",
                     help="accept f_path values that are absolute or leave --images (default: rejected)")

    mrg = steps.add_parser("merge", help="write OUT.json from every rank's progress")
    mrg.add_argument("--out", required=True)
    return parser


def _run_kwargs(args) -> dict:
    return {"out": args.out, "batch_size": args.batch_size, "device": args.device, "dtype": args.dtype,
            "on_bad_record": args.on_bad_record, "progress": not args.no_progress, "overwrite": args.overwrite,
            "allow_paths_outside_root": args.allow_paths_outside_root, "max_image_pixels": args.max_image_pixels}


def _given(**values) -> dict:
    """Only the options the user set (None = keep the step config's default)."""
    return {k: v for k, v in values.items() if v is not None}


def _dispatch(args):
    if args.step == "recaption":
        from fgclip_lmm.datagen.recaption import RecaptionConfig, run_recaption

        return run_recaption(RecaptionConfig(
            image_root=args.images, input=args.input, model=args.model,
            **_given(long_prompt=args.long_prompt, short_prompt=args.short_prompt), short_source=args.short_source,
            max_new_tokens=args.max_new_tokens,
            short_max_new_tokens=args.short_max_new_tokens, min_words=args.min_words,
            short_min_words=args.short_min_words, max_retries=args.max_retries,
            retry_temperature=args.retry_temperature, seed=args.seed, **_run_kwargs(args)))
    if args.step == "ground":
        from fgclip_lmm.datagen.ground import GroundConfig, run_ground

        return run_ground(GroundConfig(
            input=args.input, image_root=args.images, detector=args.detector, phrases=args.phrases,
            phrase_model=args.phrase_model, max_phrases=args.max_phrases, threshold=args.threshold,
            nms_iou=args.nms_iou, max_boxes=args.max_boxes, max_boxes_per_phrase=args.max_boxes_per_phrase,
            min_box_side=args.min_box_side, text_threshold=args.text_threshold, drop_empty=args.drop_empty,
            **_run_kwargs(args)))
    from fgclip_lmm.datagen.negatives import NegativesConfig, run_negatives

    return run_negatives(NegativesConfig(
        input=args.input, model=args.model, rules_only=args.rules_only, image_root=args.images,
        num_negatives=args.num_negatives, **_given(prompt=args.prompt), max_new_tokens=args.max_new_tokens,
        llm_batch_size=args.llm_batch_size, temperature=args.temperature, seed=args.seed, **_run_kwargs(args)))


def _print_stats(stats: dict, out: str) -> None:
    """The end-of-run report: items kept, rejections per reason with their first messages, the counters."""
    print(f"wrote {out}: {stats['ok']} of {stats['items']} items; rejected {stats['rejected'] or 'none'}")
    for reason, examples in stats.get("examples", {}).items():
        print(f"  {reason}: {stats['rejected'][reason]}")
        for example in examples:
            print(f"    e.g. {example}")
    print("counts: " + json.dumps(stats["counts"]))
    if stats["items"] and not stats["ok"]:  # an empty dataset is never a success
        raise InputError(f"nothing left: every one of the {stats['items']} items was rejected "
                         f"({', '.join(f'{k} {v}' for k, v in stats['rejected'].items())}); "
                         f"report in {stats_path(out)}")


def main(argv: list[str]) -> int:
    return run_command("datagen", _main, argv)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.step == "check":
        from fgclip_lmm.datagen.check import CheckConfig, check, format_report

        report = check(CheckConfig(data=args.data, tokenizer=args.tokenizer, image_root=args.images,
                                   num_negatives=args.num_negatives, max_anns=args.max_anns,
                                   short_caption_prefix=args.short_caption_prefix, out=args.out,
                                   allow_paths_outside_root=args.allow_paths_outside_root))
        print(json.dumps(report, indent=2) if args.json else format_report(report))
        return 0
    if args.step == "merge":
        from fgclip_lmm.datagen.runner import merge

        _print_stats(merge(args.out), args.out)
        return 0
    result = _dispatch(args)
    print(f"{args.step}: {result.processed} items in {result.seconds:.1f} s ({result.items_per_second:.2f} items/s)")
    if result.merged:
        _print_stats(result.stats, args.out)
    else:
        print(f"this rank is done; other ranks are still working. The last one writes {args.out}, "
              f"or run `fgclip-lmm datagen merge --out {args.out}` once all are through.")
    return 0
