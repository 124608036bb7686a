"""Resolve `--data` for eval-clip: an explicit file / directory as given, or a synthetic-world root."""
from __future__ import annotations

from pathlib import Path


def resolve_data(bench: str, path: Path) -> tuple[Path, Path | None]:
    """(data path, default image root or None for the format's own default)."""
    return path, None
