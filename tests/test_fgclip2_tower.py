"""The `fgclip2` tower: NaFlex -> fixed-grid `SiglipVisionModel` parity, the registry entry, and an assembled LLaVA
that loads in stock transformers."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LlavaForConditionalGeneration, LlavaProcessor, SiglipVisionModel
from transformers.utils import logging

from fgclip_lmm.commands.assemble import main as assemble_main
from fgclip_lmm.model.fixed_grid import fgclip2_vision_as_siglip, patchify
from fgclip_lmm.testing import write_tiny_llm
from fgclip_lmm.testing.fgclip2 import tiny_model, write_official_checkpoint
from fgclip_lmm.tower import FGCLIP2Tower, TowerConfig, build_tower

logging.set_verbosity_error()
logging.disable_progress_bar()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fgclip2_tower")
    model = tiny_model(seed=3).eval()
    with torch.no_grad():  # a non-trivial learned position table, so the resize really matters
        model.vision_model.embeddings.position_embedding.weight.normal_()
    model.save_pretrained(root / "ours")
    marker = write_official_checkpoint(model, root / "official")
    return types.SimpleNamespace(root=root, model=model, ours=str(root / "ours"), official=str(root / "official"),
                                 marker=marker)


@pytest.mark.parametrize("image_size", [32, 48, 24])  # the learned 4x4 grid, then resized to 6x6 and 3x3
def test_fixed_grid_tower_equals_the_naflex_tower_on_square_images(dirs, image_size):
    fixed = fgclip2_vision_as_siglip(dirs.model, image_size)
    assert type(fixed) is SiglipVisionModel and fixed.config.image_size == image_size
    assert not fixed.config.vision_use_head
    images = torch.randn(3, 3, image_size, image_size)
    with torch.no_grad():
        want = dirs.model.vision_model(**patchify(images, 8), output_hidden_states=True)
        got = fixed(pixel_values=images, output_hidden_states=True)
    assert len(got.hidden_states) == len(want.hidden_states)
    for a, b in zip(got.hidden_states, want.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=0, atol=1e-5)


def test_fgclip2_tower_from_ours_and_official_without_remote_code(dirs):
    lazy = build_tower(TowerConfig(type="fgclip2", path=dirs.official, image_size=48, delay_load=True))
    assert (lazy.hidden_size, lazy.num_patches, lazy.image_size, lazy.is_loaded) == (32, 36, 48, False)
    lazy.load_model()
    assert isinstance(lazy, FGCLIP2Tower) and not dirs.marker.exists()
    tower = build_tower(TowerConfig(type="fgclip2", path=dirs.ours, image_size=48))
    images = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        want = dirs.model.vision_model(**patchify(images, 8), output_hidden_states=True).hidden_states[-2]
    for t in (tower, lazy):
        torch.testing.assert_close(t(images), want, rtol=0, atol=1e-5)
    assert not tower.has_cls and tower.hf_select_strategy == "full" and tower.num_image_tokens == 36
    processor = tower.image_processor
    assert processor.size == {"height": 48, "width": 48} and int(processor.resample) == Image.Resampling.BILINEAR
    assert list(processor.image_mean) == [0.5, 0.5, 0.5]
    default = build_tower(TowerConfig(type="fgclip2", path=dirs.ours, delay_load=True))
    assert default.image_size == 32  # the learned 4 x 4 table at patch 8
    with pytest.raises(ValueError, match="image_size=50 must be a positive multiple of the patch size 8"):
        build_tower(TowerConfig(type="fgclip2", path=dirs.ours, image_size=50))
    with pytest.raises(ValueError, match="image_size=48 is only for towers exported at a chosen resolution"):
        build_tower(TowerConfig(type="siglip", path=dirs.ours, image_size=48))


def test_assembled_fgclip2_llava_loads_in_stock_transformers(dirs):
    llm = write_tiny_llm(dirs.root / "llama", "llama")
    out = dirs.root / "llava"
    assert assemble_main(["--tower", f"fgclip2:{dirs.official}", "--llm", str(llm), "--out", str(out),
                          "--image-size", "48", "--feature-layer", "-2"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["vision_config"]["model_type"] == "siglip_vision_model" and config["image_seq_length"] == 36
    assert "auto_map" not in config and json.loads((out / "fgclip_lmm.json").read_text())["tower"]["image_size"] == 48
    model = LlavaForConditionalGeneration.from_pretrained(out).eval()
    processor = LlavaProcessor.from_pretrained(out)
    assert type(model.model.vision_tower) is SiglipVisionModel
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                         {"type": "text", "text": "what is it?"}]}],
                                           add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    assert inputs["pixel_values"].shape[-2:] == (48, 48)
    with torch.no_grad():
        logits = model(**inputs).logits
        tower_out = model.model.vision_tower(inputs["pixel_values"], output_hidden_states=True).hidden_states[-2]
        naflex = dirs.model.vision_model(**patchify(inputs["pixel_values"], 8), output_hidden_states=True)
    assert torch.isfinite(logits).all() and not dirs.marker.exists()
    torch.testing.assert_close(tower_out, naflex.hidden_states[-2], rtol=0, atol=1e-5)
