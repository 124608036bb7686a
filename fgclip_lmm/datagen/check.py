"""Step 4, `check`: statistics and validation of a FineHARD set (ours or the official `qihoo360/FineHARD` files).

Records are read and validated exactly as training reads them: `records_io.read_records` and
`finehard.parse_finehard_record` under a `skip` `BadRecordPolicy`, so a record or box counted as rejected here is
one the trainer would drop (reasons: missing_field, empty_caption, box_out_of_range, box_degenerate,
wrong_negative_count, missing_image with `--image-root`, invalid_json, invalid_utf8). Every box is validated, not
only the first `max_anns` (4) the official trainer uses; the boxes beyond it are counted.

Report keys: `files`, `records` {read, valid, rejected}, `rejected_by_reason` (records and boxes), `examples`
(first messages per reason), `boxes` {total, per_image histogram, mean_per_image, beyond_max_anns},
`negatives` {flag_short_neg: {0, 1}, per_box histogram}, and `lengths` per text field (caption,
short_caption with its "a photo of " prefix, short_expr, long_expr, negative): count, min, mean, p50, p95, max
and `over_limit` (tokens beyond 248 for captions, 77 otherwise), in tokens of `--tokenizer` (special tokens
included, as the model sees them) or in whitespace words without one.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from fgclip_lmm.data.bad_records import BadRecordPolicy
from fgclip_lmm.data.finehard import FineHardConfig, parse_finehard_record
from fgclip_lmm.data.records_io import read_records, resolve_data_files
from fgclip_lmm.datagen.inputs import STRIP_PREFIXES
from fgclip_lmm.datagen.runner import atomic_write_json

FIELDS = ("caption", "short_caption", "short_expr", "long_expr", "negative")


@dataclass(frozen=True)
class CheckConfig:
    data: str
    tokenizer: str | None = None  # HF tokenizer dir or id; None counts whitespace words
    image_root: str | None = None  # when given, missing images are rejected (missing_image)
    num_negatives: int = 10
    max_anns: int = 4
    long_max_tokens: int = 248
    short_max_tokens: int = 77
    short_caption_prefix: str = "a photo of "
    out: str | None = None  # also write the report here (JSON)
    batch: int = 1024  # texts per tokenizer call
    allow_paths_outside_root: bool = False  # absolute / `..` f_path values are rejected unless true


def _summary(hist: Counter, limit: int) -> dict:
    count = sum(hist.values())
    if not count:
        return {"count": 0}
    ordered = sorted(hist.items())

    def quantile(q: float) -> int:
        seen = 0
        for value, n in ordered:
            seen += n
            if seen >= q * count:
                return value
        return ordered[-1][0]

    return {"count": count, "min": ordered[0][0], "mean": round(sum(v * n for v, n in ordered) / count, 2),
            "p50": quantile(0.5), "p95": quantile(0.95), "max": ordered[-1][0],
            "over_limit": sum(n for v, n in ordered if v > limit)}


class _Lengths:
    """Length histograms per field, counted in tokens (batched) or whitespace words."""

    def __init__(self, tokenizer_name: str | None, batch: int):
        self.hist = {field: Counter() for field in FIELDS}
        self.pending: dict[str, list[str]] = {field: [] for field in FIELDS}
        self.batch = batch
        self.tokenizer = None
        if tokenizer_name:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_name)
            self.tokenizer.model_max_length = 1 << 30  # we measure lengths; no "longer than maximum" warnings

    def add(self, field: str, text: str) -> None:
        self.pending[field].append(text)
        if len(self.pending[field]) >= self.batch:
            self.flush(field)

    def flush(self, field: str) -> None:
        texts, self.pending[field] = self.pending[field], []
        if not texts:
            return
        if self.tokenizer is None:
            self.hist[field].update(len(t.split()) for t in texts)
        else:
            ids = self.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
            self.hist[field].update(len(x) for x in ids)


def check(config: CheckConfig) -> dict:
    """Validate and measure every record of `config.data`; returns (and optionally writes) the report."""
    policy = BadRecordPolicy("skip")
    parse_config = FineHardConfig(data_path=config.data, image_root=config.image_root, strip_prefixes=STRIP_PREFIXES,
                                  max_boxes=1 << 30, num_hard_negatives=config.num_negatives,
                                  short_caption_prefix=config.short_caption_prefix, on_bad_record="skip",
                                  check_image_paths=config.image_root is not None,
                                  allow_paths_outside_root=config.allow_paths_outside_root)
    lengths = _Lengths(config.tokenizer, config.batch)
    files = resolve_data_files(config.data)
    read = valid = 0
    per_image, per_box, flags = Counter(), Counter(), Counter()
    beyond = 0
    for path in files:
        for index, raw in read_records(path, policy):
            read += 1
            record = parse_finehard_record(raw, str(path), index, parse_config, policy)
            if record is None:
                continue
            valid += 1
            n = len(record.short_exprs)
            per_image[n] += 1
            beyond += max(0, n - config.max_anns)
            lengths.add("caption", record.caption)
            lengths.add("short_caption", record.short_caption)
            for short, long_, negs in zip(record.short_exprs, record.long_exprs, record.negatives, strict=True):
                lengths.add("short_expr", short)
                lengths.add("long_expr", long_)
                flags[int(negs is not None)] += 1
                per_box[len(negs or [])] += 1
                for neg in negs or []:
                    lengths.add("negative", neg)
    for field in FIELDS:
        lengths.flush(field)
    report = policy.report
    boxes = sum(n * c for n, c in per_image.items())
    result = {
        "files": [str(f) for f in files],
        "records": {"read": read, "valid": valid, "rejected": read - valid},
        "rejected_by_reason": dict(sorted(report.skipped.items())),
        "examples": report.examples,
        "boxes": {"total": boxes, "per_image": {str(k): v for k, v in sorted(per_image.items())},
                  "mean_per_image": round(boxes / valid, 3) if valid else 0.0, "beyond_max_anns": beyond,
                  "max_anns": config.max_anns},
        "negatives": {"flag_short_neg": {str(k): v for k, v in sorted(flags.items())},
                      "per_box": {str(k): v for k, v in sorted(per_box.items())}},
        "length_unit": "tokens" if config.tokenizer else "words",
        "tokenizer": config.tokenizer,
        "lengths": {field: _summary(lengths.hist[field],
                                    config.long_max_tokens if field == "caption" else config.short_max_tokens)
                    for field in FIELDS},
    }
    if config.out:
        atomic_write_json(Path(config.out), result, indent=2)
    return result


def format_report(report: dict) -> str:
    """A short human-readable summary of `check`'s report."""
    rec, boxes, negs = report["records"], report["boxes"], report["negatives"]
    lines = [f"records: {rec['read']} read, {rec['valid']} valid, {rec['rejected']} rejected",
             f"rejected (records and boxes) by reason: {report['rejected_by_reason'] or 'none'}",
             (f"boxes: {boxes['total']} ({boxes['mean_per_image']} per image; per image {boxes['per_image']}; "
              f"{boxes['beyond_max_anns']} beyond the first {boxes['max_anns']})"),
             f"flag_short_neg: {negs['flag_short_neg']}; negatives per box: {negs['per_box']}"]
    for field, s in report["lengths"].items():
        if s["count"]:
            lines.append(f"{field} {report['length_unit']}: min {s['min']} mean {s['mean']} p50 {s['p50']} "
                         f"p95 {s['p95']} max {s['max']} over limit {s['over_limit']} (n={s['count']})")
    return "\n".join(lines)
