"""One image loader: datagen, the lmms-eval plugin and eval-clip decode images as training does (EXIF orientation
applied, transparency on white), so boxes found by `datagen ground` are in the frame the trainer sees."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fgclip_lmm.data.finehard import FineHardConfig, FineHardDataset
from fgclip_lmm.data.images import load_rgb
from fgclip_lmm.datagen.ground import GroundConfig, run_ground

CAPTION = "A large red circle sits on the left of a small blue square in the picture."


def write_exif_rotated_jpeg(path: Path) -> None:
    """Stored 64 wide x 32 high, left half red; EXIF orientation 6 says "rotate 90 degrees clockwise to view"."""
    stored = np.zeros((32, 64, 3), dtype=np.uint8)
    stored[:, :32] = (220, 30, 30)
    stored[:, 32:] = (30, 30, 220)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, exif=exif, quality=95)


def write_transparent_png(path: Path) -> None:
    """48 x 48 RGBA: left half opaque red, right half fully transparent (its RGB values are black)."""
    pixels = np.zeros((48, 48, 4), dtype=np.uint8)
    pixels[:, :24] = (220, 30, 30, 255)
    Image.fromarray(pixels, mode="RGBA").save(path)


def _inputs(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    images.mkdir()
    write_exif_rotated_jpeg(images / "rotated.jpg")
    write_transparent_png(images / "alpha.png")
    records = [{"f_path": name, "caption": CAPTION, "short_caption": "a red circle", "bbox_info": []}
               for name in ("rotated.jpg", "alpha.png")]
    data = tmp_path / "captions.json"
    data.write_text(json.dumps(records))
    return images, data


def test_datagen_ground_sees_the_pixels_training_sees(tmp_path) -> None:
    images, data = _inputs(tmp_path)
    seen: list[Image.Image] = []

    def detector(batch, queries):  # records what the step hands the detector; one box per query
        seen.extend(batch)
        return [{"boxes": torch.tensor([[0.1, 0.1, 0.5, 0.5]] * len(q)), "scores": torch.full((len(q),), 0.9),
                 "labels": torch.arange(len(q))} for q in queries]

    config = GroundConfig(input=str(data), image_root=str(images), out=str(tmp_path / "grounded.json"),
                          progress=False)
    run_ground(config, detect=detector)
    rotated, alpha = seen
    assert rotated.size == (32, 64)  # upright: 32 wide, 64 high (the stored file is 64 x 32)
    upright = np.asarray(rotated)
    assert upright[:30, :, 0].mean() > 180 and upright[34:, :, 2].mean() > 180  # red on top after the rotation
    assert np.asarray(alpha)[:, 30:].min() == 255  # transparent half is white, not black
    # ... and it is exactly the image the training reader decodes for the same file
    trained = FineHardDataset(FineHardConfig(data_path=str(tmp_path / "grounded.json"), image_root=str(images),
                                             image_size=32))
    for image, record in zip(seen, trained.records, strict=True):
        assert np.array_equal(np.asarray(image), np.asarray(load_rgb(record.image_path)))


def test_plugin_documents_decode_transparency_on_white_before_doc_to_visual(tmp_path) -> None:
    from lmms_eval.tasks.pope.utils import pope_doc_to_visual

    from fgclip_lmm.eval.lmm.requests import flatten_visuals, rgb_doc

    _, _ = _inputs(tmp_path)
    doc = {"image": Image.open(tmp_path / "images" / "alpha.png"), "question": "q"}
    naive = np.asarray(pope_doc_to_visual(doc)[0])
    assert naive[:, 30:].max() == 0  # lmms-eval's own .convert("RGB") paints transparency black
    ours = flatten_visuals(pope_doc_to_visual(rgb_doc(doc)), "pope/test/0")[0]
    assert np.asarray(ours)[:, 30:].min() == 255
    rotated = flatten_visuals([Image.open(tmp_path / "images" / "rotated.jpg")], "x")[0]
    assert rotated.size == (32, 64)
