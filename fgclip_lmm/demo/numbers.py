"""Provenance for every number in the demo report: each value is read from a run artifact through `Numbers.get`,
which records (file, key path, value). `report.json` lists them, and a test re-reads each one from its file."""
from __future__ import annotations

import json
import math
from pathlib import Path


class Numbers:
    def __init__(self, root: Path):
        self.root = root
        self.records: list[dict] = []
        self._cache: dict[Path, object] = {}

    def load(self, path: Path):
        """The parsed JSON (or JSONL rows) of `path`, read once; for structure, not for reported values."""
        if path not in self._cache:
            if path.suffix == ".jsonl":
                self._cache[path] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            else:
                self._cache[path] = json.loads(path.read_text())
        return self._cache[path]

    def get(self, path: Path, *keys, scale: float = 1.0) -> float:
        """The value at `keys` inside the JSON file `path` (times `scale`), recorded for the report."""
        node = self.load(path)
        for key in keys:
            node = node[key]
        value = float(node) * scale
        self.records.append({"file": str(path.relative_to(self.root)), "keys": list(keys), "scale": scale,
                             "value": value})
        return value

    def series(self, path: Path, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric in a metrics.jsonl file (plotted, not tabulated)."""
        rows = [r for r in self.load(path) if key in r]
        return [r["step"] for r in rows], [r[key] for r in rows]


def fmt(value: float, digits: int = 1) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def verify_numbers(report_json: Path) -> list[str]:
    """Re-read every recorded number from its source; return the mismatches (empty when all were produced)."""
    data = json.loads(report_json.read_text())
    root, problems = report_json.parent, []
    for rec in data["numbers"]:
        node = Numbers(root).load(root / rec["file"])
        for key in rec["keys"]:
            node = node[key]
        if not math.isclose(float(node) * rec["scale"], rec["value"], rel_tol=1e-9, abs_tol=1e-12):
            problems.append(f"{rec['file']} {rec['keys']}: report {rec['value']} != file {node}")
    return problems
