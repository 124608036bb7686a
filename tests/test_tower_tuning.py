"""Tower trainability by gradient check for each tuning mode, and the frozen tower's no-grad forward."""
from __future__ import annotations

import pytest
import torch
from transformers.utils import logging

from fgclip_lmm.tower import LmmLoraConfig, TowerConfig, build_tower, runs_without_grad, set_no_grad_forward

logging.set_verbosity_error()
logging.disable_progress_bar()


@pytest.fixture(scope="module")
def clip_dir(tiny_clip):
    return str(tiny_clip)


def _grads(tower, x):
    out = tower(x)
    if out.requires_grad:
        out.pow(2).mean().backward()
    return out, {n: p.grad for n, p in tower.named_parameters()}


def test_frozen_tower_has_no_graph_even_with_grad_input(clip_dir):
    tower = build_tower(TowerConfig(type="fgclip", path=clip_dir, tuning="frozen"))
    x = torch.randn(2, 3, 28, 28, requires_grad=True)
    out, grads = _grads(tower, x)
    assert not out.requires_grad and out.grad_fn is None
    assert all(not p.requires_grad for p in tower.parameters()) and all(g is None for g in grads.values())
    # the no-grad mode holds when a third party (HF LLaVA) calls the wrapped model directly
    assert runs_without_grad(tower.vision_tower)
    direct = tower.vision_tower(x, output_hidden_states=True).hidden_states[-2]
    assert direct.grad_fn is None and torch.is_grad_enabled()


def test_full_tower_gets_gradients_everywhere_used(clip_dir):
    tower = build_tower(TowerConfig(type="clip", path=clip_dir, tuning="full"))
    out, grads = _grads(tower, torch.randn(2, 3, 28, 28))
    assert out.requires_grad and not runs_without_grad(tower.vision_tower)
    # everything up to the selected layer (-2 of 2: layer 0) trains; the last layer and post_layernorm are unused
    used = [n for n in grads if "encoder.layers.0." in n or "embeddings" in n]
    assert used and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in used)


def test_lora_tower_trains_only_adapters_and_merges_exactly(clip_dir):
    tower = build_tower(TowerConfig(type="clip", path=clip_dir, tuning="lora", lora=LmmLoraConfig(r=4, alpha=8)))
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"q_proj", "k_proj", "v_proj", "out_proj",
                                                                            "fc1", "fc2"}
    with torch.no_grad():  # make the adapters non-trivial (lora_B starts at zero)
        for n, p in tower.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    x = torch.randn(2, 3, 28, 28)
    out, grads = _grads(tower, x)
    assert all(g is None for n, g in grads.items() if "lora_" not in n)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_A" in n and "layers.0." in n)
    merged = tower.merged_vision_model()
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(tower(x), out.detach(), rtol=1e-5, atol=1e-5)


def test_no_grad_hooks_restore_grad_mode_and_can_be_removed():
    layer = torch.nn.Linear(3, 3)
    set_no_grad_forward(layer, True)
    y = layer(torch.randn(2, 3, requires_grad=True))
    assert y.grad_fn is None and torch.is_grad_enabled()
    with torch.no_grad():
        layer(torch.randn(1, 3))
        assert not torch.is_grad_enabled()  # the outer mode is restored, not forced on
    set_no_grad_forward(layer, False)
    assert not runs_without_grad(layer) and layer(torch.randn(2, 3)).grad_fn is not None
