"""The eval-lmm fixture tasks (`fgclip_lmm.testing.write_fixture_tasks`): every POPE split and an attribute task
with Yes/No pairs on three distinct images."""
from __future__ import annotations

from pathlib import Path

from fgclip_lmm.testing import pope_rows, write_fixture_tasks


def test_fixture_tasks_have_pairs_and_three_images(tmp_path: Path) -> None:
    names = write_fixture_tasks(tmp_path)
    assert names == ["fgclip_pope_random", "fgclip_pope_popular", "fgclip_pope_adversarial", "fgclip_attr_color"]
    assert min(p.name for p in (tmp_path / "data").iterdir()) == "attr_color.parquet"
    assert len({r["image_source"] for r in pope_rows("random")}) == 3
