"""The run's data report: every record skipped and every text truncated, printed and written to
`OUTPUT_DIR/bad_records.json` at the end of a run and before any error that stops it.

Sources: the readers' `BadRecordReport` (skips found while loading the files, which every rank finds alike, and
skips found later while decoding images, which only the rank that met them counts, plus caption truncations) and
optional trainer-side counters (the LMM dataset's encoding skips and cut conversations). At the end of a complete
run the per-rank counts are summed over ranks; after an error only this rank's counts are known, and the report
says so.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

REPORT_NAME = "bad_records.json"


class DataReport:
    """Wraps a reader's `BadRecordReport`; `extra()` returns more (skipped, truncated) counts of this rank."""

    def __init__(self, reader_report, extra: Callable[[], tuple[dict, dict]] | None = None):
        self.reader = reader_report
        self.extra = extra
        self.loaded: dict[str, int] = {}  # skips found while loading the files (identical on every rank)

    def mark_loaded(self) -> None:
        """Call once the reader has read its files: later skips are per rank."""
        self.loaded = dict(self.reader.skipped)

    def _local(self) -> tuple[Counter, Counter]:
        later = Counter(self.reader.skipped)
        later.subtract(self.loaded)
        truncated = Counter(self.reader.truncated)
        if self.extra is not None:
            skipped, cut = self.extra()
            later.update(skipped)
            truncated.update(cut)
        return +later, +truncated

    def collect(self, world: int, all_ranks: bool) -> dict:
        """The report as a dict; `all_ranks` sums the per-rank counts (a collective: every rank must call it)."""
        later, truncated = self._local()
        scope = "this rank"
        if all_ranks and world > 1:
            import torch.distributed as dist

            gathered: list = [None] * world
            dist.all_gather_object(gathered, (dict(later), dict(truncated)))
            later, truncated = Counter(), Counter()
            for rank_later, rank_truncated in gathered:
                later.update(rank_later)
                truncated.update(rank_truncated)
            scope = f"all {world} ranks"
        elif world == 1:
            scope = "the only rank"
        skipped = Counter(self.loaded) + later
        return {"skipped": dict(sorted(skipped.items())), "total_skipped": sum(skipped.values()),
                "truncated": dict(sorted(truncated.items())), "total_truncated": sum(truncated.values()),
                "examples": {k: list(v) for k, v in sorted(self.reader.examples.items())},
                "counted_on": scope}


def summary(report: dict, path: Path) -> str:
    """Console lines for the report (one line when nothing was skipped or cut)."""
    if not report["total_skipped"] and not report["total_truncated"]:
        return f"data: no bad records skipped, no text truncated (report: {path})"
    lines = [f"data report ({report['counted_on']}; written to {path}):",
             f"  bad records skipped: {report['total_skipped']}"]
    for reason, count in report["skipped"].items():
        lines.append(f"    {reason}: {count}")
        lines += [f"      e.g. {example}" for example in report["examples"].get(reason, [])]
    lines.append(f"  texts truncated: {report['total_truncated']}")
    lines += [f"    {field}: {count}" for field, count in report["truncated"].items()]
    return "\n".join(lines)


def write(report: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)
