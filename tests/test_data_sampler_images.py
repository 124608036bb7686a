"""Resumable distributed sampler and FG-CLIP image preprocessing (EXIF, PIL modes, squash-resize, CLIP mean/std)."""

from __future__ import annotations

import functools
import io
import operator

import numpy as np
import pytest
import torch
from PIL import Image

from fgclip_lmm.data.images import CLIP_MEAN, CLIP_STD, ImageConfig, ImagePreprocessor, load_rgb
from fgclip_lmm.data.sampler import ResumableSampler


def test_sampler_resumes_at_the_same_sample():
    reference = ResumableSampler(23, seed=5)
    full = [list(reference) for _ in range(2)]  # two epochs, different orders
    assert full[0] != full[1] and sorted(full[0]) == list(range(23))
    first = ResumableSampler(23, seed=5)
    iterator = iter(first)
    seen = [next(iterator) for _ in range(9)]
    state = first.state_dict()
    resumed = ResumableSampler(23, seed=5)
    resumed.load_state_dict(state)
    assert len(resumed) == 14
    assert seen + list(resumed) == full[0]
    assert list(resumed) == full[1]  # and the next epoch continues identically


def test_sampler_state_uses_consumed_count_not_prefetch():
    sampler = ResumableSampler(10, seed=1)
    order = sampler.epoch_indices().tolist()
    iterator = iter(sampler)
    for _ in range(6):  # a DataLoader prefetched 6, the model consumed 4
        next(iterator)
    resumed = ResumableSampler(10, seed=1)
    resumed.load_state_dict(sampler.state_dict(consumed=4))
    assert list(resumed) == order[4:]


def test_sampler_distributed_shards_have_equal_counts_and_cover_the_data():
    ranks = [ResumableSampler(10, seed=2, num_replicas=3, rank=r) for r in range(3)]
    shards = [list(s) for s in ranks]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert set().union(*map(set, shards)) == set(range(10))
    dropped = [list(ResumableSampler(10, seed=2, num_replicas=3, rank=r, drop_last=True)) for r in range(3)]
    assert [len(s) for s in dropped] == [3, 3, 3] and len(set(functools.reduce(operator.iadd, dropped, []))) == 9


def test_sampler_refuses_a_mismatched_state():
    state = ResumableSampler(10, seed=1).state_dict()
    with pytest.raises(ValueError, match="seed=1"):
        ResumableSampler(10, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="consumed"):
        ResumableSampler(10).state_dict(consumed=11)


def test_sampler_state_at_epoch_end_moves_to_next_epoch():
    sampler = ResumableSampler(6, seed=0)
    second_epoch = sampler.epoch_indices(1).tolist()
    sampler.load_state_dict({"epoch": 0, "position": 6, "seed": 0})
    assert sampler.epoch == 1 and list(sampler) == second_epoch


def _png(image: Image.Image, **save) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def test_squash_resize_and_clip_normalisation():
    image = Image.new("RGB", (40, 10), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 10))  # right half blue
    tensor = ImagePreprocessor(ImageConfig(size=8))(image)
    assert tensor.shape == (3, 8, 8) and tensor.dtype == torch.float32
    red = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(tensor[:, :, 0], red[:, None].expand(3, 8), atol=1e-4)  # squashed, not cropped:
    blue = (torch.tensor([0.0, 0.0, 1.0]) - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.allclose(tensor[:, :, 7], blue[:, None].expand(3, 8), atol=1e-4)  # both halves survive


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (30, 10), (0, 255, 0))
    image.paste((255, 0, 0), (0, 0, 5, 10))  # red strip on the left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    loaded = load_rgb(_png(image, format="JPEG", exif=exif.tobytes(), quality=95))
    assert loaded.size == (10, 30)
    top = np.asarray(loaded)[1, 5]
    assert top[0] > 200 and top[1] < 60  # the red strip is now at the top


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK", "1"])
def test_any_pil_mode_becomes_rgb(mode):
    base = Image.new("RGB", (12, 12), (200, 100, 50))
    if mode == "I;16":
        image = Image.fromarray(np.full((12, 12), 40000, dtype=np.uint16))
        image.putpixel((0, 0), 0)
    else:
        image = base.convert(mode)
    loaded = load_rgb(_png(image, format="TIFF"))
    assert loaded.mode == "RGB" and loaded.size == (12, 12)
    if mode == "I;16":  # 16-bit values are rescaled, not clipped to white
        assert np.asarray(loaded)[0, 0].tolist() == [0, 0, 0] and np.asarray(loaded)[5, 5].tolist() == [255, 255, 255]
    tensor = ImagePreprocessor(ImageConfig(size=4))(loaded)
    assert tensor.shape == (3, 4, 4) and torch.isfinite(tensor).all()


def test_transparent_pixels_are_composited_on_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_rgb(_png(image))).min() == 255


def test_truncated_image_raises():
    data = _png(Image.new("RGB", (64, 64), (1, 2, 3)))[:60]
    with pytest.raises((OSError, SyntaxError)):
        load_rgb(data)
