"""The datagen tests' input world (`fgclip_lmm.testing.datagen_world`): images and captions that describe them."""
from __future__ import annotations

import json

from PIL import Image


def test_world_has_images_and_captions(datagen_world) -> None:
    items = json.loads(datagen_world.finehard.read_text())
    assert items and datagen_world.num_images >= len(items)
    for item in items:
        path = datagen_world.image_root / item["f_path"].removeprefix("grit-20m/data-12m/")
        with Image.open(path) as image:
            assert image.size == (64, 64)
        assert "there is a" in item["caption"] and item["short_caption"] and item["bbox_info"] == []
