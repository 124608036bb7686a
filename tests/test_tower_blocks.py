"""Towers run only the blocks up to the feature layer: bit-identical features, blocks after it never run, the
state dict and the assembled / trained LLaVA checkpoint unchanged."""
from __future__ import annotations

import types

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoProcessor, CLIPVisionModel, LlavaForConditionalGeneration, SiglipVisionModel
from transformers.utils import logging

from fgclip_lmm.lmm.assemble import AssembleConfig, assemble, save_assembly
from fgclip_lmm.lmm.forward import lmm_forward
from fgclip_lmm.lmm.tuning import LmmTuning, apply_tuning
from fgclip_lmm.testing.models import write_tiny_clip, write_tiny_llm, write_tiny_siglip
from fgclip_lmm.tower import (
    LeadingBlocks,
    TowerConfig,
    build_tower,
    hidden_state_index,
    llava_image_features,
    prepare_llava_tower,
    run_all_blocks,
)

logging.set_verbosity_error()
logging.disable_progress_bar()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("blocks")
    ns = types.SimpleNamespace(clip=write_tiny_clip(root / "clip", hidden=32, layers=4),
                               siglip=write_tiny_siglip(root / "siglip", hidden=24, layers=3))
    llm = write_tiny_llm(root / "llm", "llama")
    model, processor, meta = assemble(AssembleConfig(tower=f"fgclip:{ns.clip}", llm=str(llm), out=str(root / "lmm")))
    ns.assembled_blocks = type(model.model.vision_tower.encoder.layers)
    ns.lmm = save_assembly(model, processor, meta, root / "lmm")
    return ns


def _block_calls(vision_model) -> list[int]:
    """Indices of the blocks that ran, recorded by forward hooks on every block."""
    calls: list[int] = []
    for i, block in enumerate(vision_model.encoder.layers._modules.values()):
        block.register_forward_hook(lambda *_, i=i: calls.append(i))
    return calls


def test_hidden_state_index_is_non_negative_and_checked():
    assert hidden_state_index(12, -2) == 11 and hidden_state_index(12, -13) == 0 and hidden_state_index(12, 12) == 12
    assert hidden_state_index(4, [-2, 1]) == [3, 1]
    with pytest.raises(ValueError, match="feature layer -14 is out of range for 12 blocks"):
        hidden_state_index(12, -14)


@pytest.mark.parametrize("layer,select", [(-2, "patch"), (-1, "patch"), (1, "cls_patch"), (-4, "patch")])
def test_clip_tower_skips_blocks_after_the_feature_layer(dirs, layer, select):
    tower = build_tower(TowerConfig(type="fgclip", path=str(dirs.clip), feature_layer=layer, select=select))
    reference = CLIPVisionModel.from_pretrained(dirs.clip).eval()
    assert tower.vision_tower.state_dict().keys() == reference.state_dict().keys()
    calls = _block_calls(tower.vision_tower)
    x = torch.randn(2, 3, 28, 28)
    want = reference(x, output_hidden_states=True).hidden_states[layer]
    assert torch.equal(tower(x), want if select == "cls_patch" else want[:, 1:])
    assert calls == list(range(hidden_state_index(4, layer)))


def test_siglip_tower_skips_the_last_block(dirs):
    tower = build_tower(TowerConfig(type="siglip", path=str(dirs.siglip)))
    reference = SiglipVisionModel.from_pretrained(dirs.siglip).eval()
    calls = _block_calls(tower.vision_tower)
    x = torch.randn(2, 3, 28, 28)
    assert torch.equal(tower(x), reference(x, output_hidden_states=True).hidden_states[-2])
    assert calls == [0, 1]


def test_llava_tower_cut_in_training_and_evaluation_keeps_the_checkpoint(dirs, tmp_path):
    assert dirs.assembled_blocks is torch.nn.ModuleList  # assembly hands the stock module to LLaVA
    stock = LlavaForConditionalGeneration.from_pretrained(dirs.lmm).eval()
    model = LlavaForConditionalGeneration.from_pretrained(dirs.lmm).eval()
    prepare_llava_tower(model, fuse_activation=False)
    assert isinstance(model.model.vision_tower.encoder.layers, LeadingBlocks)
    calls = _block_calls(model.model.vision_tower)
    pixels = torch.randn(3, 3, 28, 28)
    config = stock.config
    with torch.no_grad():
        want = stock.model.get_image_features(pixel_values=pixels, vision_feature_layer=config.vision_feature_layer,
                                              vision_feature_select_strategy=config.vision_feature_select_strategy)
        got = llava_image_features(model, pixels)
    assert all(torch.equal(a, b) for a, b in zip(got.pooler_output, want.pooler_output, strict=True))
    assert calls == [0, 1, 2]  # 4 blocks, hidden_states[-2] is the output of block 3 of 4
    # evaluation: with the index in the in-memory config the stock forward (pixel_values) works on the cut tower
    evaluated = LlavaForConditionalGeneration.from_pretrained(dirs.lmm).eval()
    prepare_llava_tower(evaluated, fuse_activation=False, index_in_config=True)
    assert evaluated.config.vision_feature_layer == 3
    # the training forward gives the stock loss with the cut (and fused) tower under full tuning
    processor = AutoProcessor.from_pretrained(dirs.lmm)
    prompt = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text",
                                            "text": "what is it?"}]}], add_generation_prompt=True)
    batch = processor(images=[torch.zeros(3, 28, 28)], text=[prompt + " a cube"], return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    trained = LlavaForConditionalGeneration.from_pretrained(dirs.lmm)
    trainable = apply_tuning(trained, LmmTuning(llm="frozen", tower="full"))
    prepare_llava_tower(trained)
    loss = lmm_forward(trainable, **batch).loss
    with torch.no_grad():
        reference = stock(**batch)
        assert torch.equal(evaluated(**batch).logits, reference.logits)
    torch.testing.assert_close(loss, reference.loss, rtol=1e-5, atol=1e-6)
    loss.backward()
    blocks = list(trained.model.vision_tower.encoder.layers._modules.values())
    assert blocks[2].mlp.fc1.weight.grad is not None and blocks[3].mlp.fc1.weight.grad is None
    # saving writes every block: the export is the stock checkpoint
    trained.save_pretrained(tmp_path / "saved")
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    original = load_file(dirs.lmm / "model.safetensors")
    assert saved.keys() == original.keys()
    assert torch.equal(saved["vision_tower.encoder.layers.3.mlp.fc1.weight"],
                       original["vision_tower.encoder.layers.3.mlp.fc1.weight"])
    run_all_blocks(trained.model.vision_tower)
    assert type(trained.model.vision_tower.encoder.layers) is torch.nn.ModuleList
