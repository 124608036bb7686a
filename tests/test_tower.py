"""Tower registry, the small interface, LLaVA's names and the image-token count formula (tiny random towers)."""
from __future__ import annotations

import json
import types

import pytest
import torch
from transformers import CLIPVisionModel, SiglipVisionModel
from transformers.utils import logging

from fgclip_lmm.testing import write_tiny_clip, write_tiny_siglip
from fgclip_lmm.tower import TOWERS, FGCLIPTower, TowerConfig, build_tower, parse_tower_spec, tower_from_llava_args

logging.set_verbosity_error()
logging.disable_progress_bar()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    clip = write_tiny_clip(root / "clip", hidden=32, layers=3)
    siglip = write_tiny_siglip(root / "siglip", hidden=24, layers=2)
    hf = root / "hf_vision"  # a vision-only checkpoint for the generic `hf` type
    CLIPVisionModel.from_pretrained(clip).save_pretrained(hf)
    (hf / "preprocessor_config.json").write_text((clip / "preprocessor_config.json").read_text())
    return types.SimpleNamespace(clip=str(clip), siglip=str(siglip), hf=str(hf))


def test_registry_has_exact_keys_and_unknown_type_lists_them(dirs):
    assert set(TOWERS) == {"fgclip", "fgclip2", "clip", "siglip", "hf"}
    with pytest.raises(ValueError, match="unknown tower type 'CLIP'; known: clip, fgclip, fgclip2, hf, siglip"):
        build_tower(TowerConfig(type="CLIP", path=dirs.clip))
    with pytest.raises(ValueError, match="must be TYPE:PATH with TYPE in clip, fgclip, fgclip2, hf, siglip"):
        parse_tower_spec("openai/clip-vit-large-patch14")  # no TYPE: prefix
    assert parse_tower_spec("fgclip:/a:b/c") == ("fgclip", "/a:b/c")


def test_config_validation_names_field_and_value():
    with pytest.raises(ValueError, match=r"TowerConfig.select='cls'; known: patch, cls_patch"):
        TowerConfig(type="clip", path="x", select="cls")
    with pytest.raises(ValueError, match=r"TowerConfig.tuning='partial'"):
        TowerConfig(type="clip", path="x", tuning="partial")


@pytest.mark.parametrize("tower_type", ["clip", "fgclip", "hf"])
def test_clip_family_forward_is_penultimate_hidden_state(dirs, tower_type):
    path = dirs.hf if tower_type == "hf" else dirs.clip
    tower = build_tower(TowerConfig(type=tower_type, path=path))
    reference = CLIPVisionModel.from_pretrained(dirs.clip).eval()
    x = torch.randn(2, 3, 28, 28)
    want = reference(x, output_hidden_states=True).hidden_states[-2][:, 1:]
    got = tower(x)
    assert got.shape == (2, tower.num_patches, tower.hidden_size) == (2, 4, 32)
    torch.testing.assert_close(got, want)
    assert tower.has_cls and tower.hf_select_strategy == "default" and tower.num_additional_image_tokens == 1
    assert (tower.image_size, tower.patch_size, tower.num_patches_per_side) == (28, 14, 2)
    assert tower.dtype == torch.float32 and tower.device.type == "cpu"


def test_fgclip_tower_uses_the_model_core_loader(dirs):
    tower = build_tower(TowerConfig(type="fgclip", path=dirs.clip))
    assert isinstance(tower, FGCLIPTower) and type(tower.vision_tower) is CLIPVisionModel


def test_image_token_count_formula_patch_vs_cls_patch(dirs):
    """N = (S/p)^2 + additional - (1 if `default`), as HF's LlavaProcessor computes it."""
    cases = [("clip", dirs.clip, "patch", 4, "default", 1), ("clip", dirs.clip, "cls_patch", 5, "full", 1),
             ("siglip", dirs.siglip, "patch", 4, "full", 0)]
    for tower_type, path, select, count, strategy, additional in cases:
        tower = build_tower(TowerConfig(type=tower_type, path=path, select=select))
        side = tower.image_size // tower.patch_size
        formula = side * side + tower.num_additional_image_tokens - (1 if tower.hf_select_strategy == "default" else 0)
        assert tower.num_image_tokens == formula == count, (tower_type, select)
        assert (tower.hf_select_strategy, tower.num_additional_image_tokens) == (strategy, additional)
        assert tower(torch.randn(1, 3, 28, 28)).shape[1] == count


def test_siglip_tower_keeps_all_tokens_and_rejects_cls_patch(dirs):
    tower = build_tower(TowerConfig(type="siglip", path=dirs.siglip, feature_layer=-1))
    reference = SiglipVisionModel.from_pretrained(dirs.siglip).eval()
    x = torch.randn(1, 3, 28, 28)
    torch.testing.assert_close(tower(x), reference(x, output_hidden_states=True).hidden_states[-1])
    assert not tower.has_cls and tower.hidden_size == 24
    with pytest.raises(ValueError, match="cls_patch.*needs a CLS token"):
        build_tower(TowerConfig(type="siglip", path=dirs.siglip, select="cls_patch"))
    with pytest.raises(ValueError, match="has_cls=True contradicts tower type 'siglip'"):
        build_tower(TowerConfig(type="siglip", path=dirs.siglip, has_cls=True))


def test_hf_tower_infers_cls_from_token_count(dirs):
    assert build_tower(TowerConfig(type="hf", path=dirs.hf))._has_cls is True
    hf_siglip = build_tower(TowerConfig(type="hf", path=dirs.siglip))
    assert hf_siglip.has_cls is False and hf_siglip.hf_select_strategy == "full"


def test_feature_layer_out_of_range(dirs):
    with pytest.raises(ValueError, match="feature_layer=-5 is out of range for 3 layers"):
        build_tower(TowerConfig(type="clip", path=dirs.clip, feature_layer=-5))


def test_missing_weights_are_an_error(dirs, tmp_path):
    cfg = json.loads((__import__("pathlib").Path(dirs.siglip) / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    from safetensors.torch import load_file, save_file

    state = load_file(f"{dirs.siglip}/model.safetensors")
    save_file({k: v for k, v in state.items() if "layers.1." not in k}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="left weights uninitialised"):
        build_tower(TowerConfig(type="siglip", path=str(tmp_path)))


def test_llava_names_and_delay_load(dirs):
    args = types.SimpleNamespace(mm_vision_select_layer=-2, mm_vision_select_feature="patch")
    tower = tower_from_llava_args(f"clip:{dirs.clip}", args, delay_load=True)
    assert not tower.is_loaded and tower.vision_tower is None
    assert tower.hidden_size == 32 and tower.num_patches == 4 and tower.config.num_hidden_layers == 3
    with pytest.raises(RuntimeError, match="delay-loaded"):
        tower(torch.randn(1, 3, 28, 28))
    tower.load_model()
    loaded = tower.vision_tower
    tower.load_model()  # a second call does nothing
    assert tower.is_loaded and tower.vision_tower is loaded
    assert tower.image_processor.crop_size["height"] == 28
    assert tower.dummy_feature.shape == (1, 32)
    x = torch.randn(2, 3, 28, 28)
    outs = tower.vision_tower(x, output_hidden_states=True)  # the blocks after select_layer are not run
    stock = CLIPVisionModel.from_pretrained(dirs.clip).eval()(x, output_hidden_states=True)
    torch.testing.assert_close(tower.feature_select(outs), stock.hidden_states[-2][:, 1:])
    feats = tower([torch.randn(3, 28, 28), torch.randn(1, 3, 28, 28)])  # LLaVA's list input
    assert [f.shape for f in feats] == [torch.Size([1, 4, 32])] * 2
    unfrozen = tower_from_llava_args(f"clip:{dirs.clip}", types.SimpleNamespace(unfreeze_mm_vision_tower=True),
                                     delay_load=True)
    assert unfrozen.is_loaded and unfrozen.cfg.tuning == "full"


def test_fgclip_tower_loads_our_checkpoint_format(tmp_path):
    from fgclip_lmm.model import FGCLIPConfig, FGCLIPModel

    torch.manual_seed(0)
    fg = FGCLIPModel(FGCLIPConfig.tiny(image_size=32, patch_size=8)).eval()
    fg.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "fgclip"
    lazy = build_tower(TowerConfig(type="fgclip", path=str(tmp_path), delay_load=True))
    assert (lazy.hidden_size, lazy.num_patches, lazy.is_loaded) == (32, 16, False)
    lazy.load_model()
    x = torch.randn(2, 3, 32, 32)
    want = fg.vision_model(pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]
    torch.testing.assert_close(lazy(x), want)
    assert lazy.image_processor.crop_size == {"height": 32, "width": 32}  # built from the config: no processor saved
