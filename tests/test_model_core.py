"""Model core: the 77->long stretch, the three checkpoint formats, Auto classes, features and bad input."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, CLIPConfig, CLIPModel

from fgclip_lmm.model import FGCLIPConfig, FGCLIPModel, convert_checkpoint, load_clip_vision_model
from fgclip_lmm.model.positions import default_long_length, stretch_positions


def tiny_clip(seed=0) -> CLIPModel:
    torch.manual_seed(seed)
    fg = FGCLIPConfig.tiny()
    cfg = CLIPConfig(text_config=fg.text_config.to_dict(), vision_config=fg.vision_config.to_dict(),
                     projection_dim=fg.projection_dim, logit_scale_init_value=4.6052)
    return CLIPModel(cfg).eval()


def official_keys(cfg: FGCLIPConfig) -> set[str]:
    """The official v1 state-dict names (docs/model.md, "Model structure"), generated for a config."""
    layer = [f"self_attn.{p}_proj" for p in "qkv"] + ["self_attn.out_proj", "layer_norm1", "mlp.fc1", "mlp.fc2",
                                                       "layer_norm2"]
    keys = {"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
            "text_model.embeddings.position_embedding_res.weight",
            "text_model.embeddings.position_embedding_ori.weight", "vision_model.embeddings.class_embedding",
            "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding.weight",
            "visual_projection.weight", "text_projection.weight", "text_filip_projection.weight", "logit_scale",
            "logit_scale_finegraind", "logit_scale_hardneg"}
    for tower, n in (("text_model", cfg.text_config.num_hidden_layers),
                     ("vision_model", cfg.vision_config.num_hidden_layers)):
        for i in range(n):
            keys |= {f"{tower}.encoder.layers.{i}.{m}.{w}" for m in layer for w in ("weight", "bias")}
    keys |= {f"text_model.final_layer_norm.{w}" for w in ("weight", "bias")}
    keys |= {f"vision_model.{m}.{w}" for m in ("pre_layrnorm", "post_layernorm") for w in ("weight", "bias")}
    return keys


def text_ids(cfg: FGCLIPConfig, batch: int, length: int, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.text_config.vocab_size - 2, (batch, length), generator=g)
    ids[:, 0] = cfg.text_config.bos_token_id
    ends = torch.randint(2, length, (batch,), generator=g)
    ids[torch.arange(batch), ends] = cfg.text_config.eos_token_id
    return ids


def test_stretch_matches_official_formula_row_by_row():
    pre = torch.randn(77, 6, dtype=torch.float64)
    new = stretch_positions(pre, 248, keep_len=20, stretch=4)
    assert default_long_length(77, 20, 4) == 248 and new.shape == (248, 6)
    assert torch.equal(new[:20], pre[:20])
    for j in range(56):
        for m in range(4):
            assert torch.allclose(new[20 + 4 * j + m], ((4 - m) * pre[20 + j] + m * pre[21 + j]) / 4)
    for m in range(4):
        assert torch.allclose(new[244 + m], pre[76] + m * (pre[76] - pre[75]) / 4)


def test_openai_conversion_reproduces_clip_and_stretches(tmp_path):
    clip = tiny_clip()
    clip.save_pretrained(tmp_path / "openai")
    model = FGCLIPModel.from_pretrained(tmp_path / "openai")
    cfg = model.config
    ids = text_ids(cfg, 3, cfg.short_max_len)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.get_text_features(ids), clip.get_text_features(input_ids=ids).pooler_output,
                              atol=1e-5)
        assert torch.allclose(model.get_image_features(pixels),
                              clip.get_image_features(pixel_values=pixels).pooler_output, atol=1e-5)
    emb = model.text_model.embeddings
    expected = stretch_positions(clip.text_model.embeddings.position_embedding.weight, cfg.long_max_len,
                                 cfg.keep_len, cfg.position_stretch)
    assert torch.equal(emb.position_embedding_ori.weight, expected)
    assert torch.equal(emb.position_embedding_res.weight, expected)
    assert torch.equal(model.text_filip_projection.weight, clip.text_projection.weight)
    assert model.logit_scale_hardneg.item() == model.logit_scale_finegraind.item() == clip.logit_scale.item()


def test_state_dict_keys_round_trip_and_auto(tmp_path):
    model = FGCLIPModel(FGCLIPConfig.tiny())
    assert set(model.state_dict()) == official_keys(model.config)
    model.save_pretrained(tmp_path / "ours")
    assert (tmp_path / "ours" / "model.safetensors").is_file()
    loaded = FGCLIPModel.from_pretrained(tmp_path / "ours")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    auto = AutoModel.from_pretrained(tmp_path / "ours")
    assert isinstance(auto, FGCLIPModel) and isinstance(AutoConfig.from_pretrained(tmp_path / "ours"), FGCLIPConfig)
    assert auto.config.long_max_len == model.config.long_max_len


def write_official_checkpoint(model: FGCLIPModel, path):
    """An official qihoo360-style directory: model_type clip + auto_map to remote code that must never run."""
    path.mkdir()
    cfg = {"model_type": "clip", "architectures": ["FGCLIPModel"],
           "auto_map": {"AutoConfig": "modeling_fgclip.FGCLIPConfig", "AutoModelForCausalLM":
                        "modeling_fgclip.FGCLIPModel"},
           "text_config": model.config.text_config.to_dict(), "vision_config": model.config.vision_config.to_dict(),
           "projection_dim": model.config.projection_dim, "logit_scale_init_value": 2.6592}
    (path / "config.json").write_text(json.dumps(cfg))
    marker = path / "EXECUTED"
    (path / "modeling_fgclip.py").write_text(f"open({str(marker)!r}, 'w').write('remote code ran')\n")
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    state["text_model.embeddings.position_ids"] = torch.full((1, model.config.long_max_len), 7)  # garbage
    save_file(state, str(path / "model.safetensors"))
    return marker


def test_official_checkpoint_loads_without_remote_code(tmp_path):
    torch.manual_seed(1)
    src = FGCLIPModel(FGCLIPConfig.tiny()).eval()
    marker = write_official_checkpoint(src, tmp_path / "official")
    model = FGCLIPModel.from_pretrained(tmp_path / "official")
    assert not marker.exists()
    for k, v in src.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert torch.equal(model.text_model.embeddings.position_ids[0], torch.arange(model.config.long_max_len))
    out = convert_checkpoint(tmp_path / "official", tmp_path / "converted")
    assert json.loads((out / "config.json").read_text())["model_type"] == "fgclip"
    vision = load_clip_vision_model(out)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(vision(pixel_values=pixels).pooler_output,
                              src.vision_model(pixel_values=pixels).pooler_output)
    assert not marker.exists()


def test_convert_cli_subprocess(tmp_path):
    tiny_clip().save_pretrained(tmp_path / "openai")
    run = subprocess.run([sys.executable, "-m", "fgclip_lmm.cli", "convert", str(tmp_path / "openai"),
                          str(tmp_path / "out")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert isinstance(FGCLIPModel.from_pretrained(tmp_path / "out"), FGCLIPModel)


def test_long_path_any_length_and_short_equivalence():
    model = FGCLIPModel(FGCLIPConfig.tiny()).eval()
    cfg = model.config
    ids = text_ids(cfg, 2, 40)
    with torch.no_grad():
        full = model.get_text_features(torch.nn.functional.pad(ids, (0, cfg.long_max_len - 40),
                                                                value=cfg.text_config.pad_token_id),
                                       walk_short_pos=False)
        short = model.get_text_features(ids, walk_short_pos=False)
    assert torch.allclose(full, short, atol=1e-5)  # padding after eos never changes the pooled feature


def test_whole_image_box_equals_dense_mean():
    model = FGCLIPModel(FGCLIPConfig.tiny()).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        dense = model.get_image_dense_features(pixels)
        whole = model.get_image_box_roi_features(pixels, [torch.tensor([[0.0, 0, 1, 1]])] * 2)
        packed = model.get_image_box_roi_features(pixels, torch.tensor([[0, 0, 0, 1, 1], [1, 0, 0, 1, 1.0]]))
    assert dense.shape == (2, 16, 16)
    assert torch.allclose(whole, dense.mean(1), atol=1e-5) and torch.allclose(packed, whole)
    # the dense path is the last block on its value path, from the penultimate hidden state
    with torch.no_grad():
        hs = model.vision_model(pixel_values=pixels, output_hidden_states=True).hidden_states
        layer = model.vision_model.encoder.layers[-1]
        x = hs[-2] + layer.self_attn.out_proj(layer.self_attn.v_proj(layer.layer_norm1(hs[-2])))
        x = x + layer.mlp(layer.layer_norm2(x))
        ref = model.visual_projection(model.vision_model.post_layernorm(x[:, 1:]))
    assert torch.allclose(dense, ref, atol=1e-6)


@pytest.mark.parametrize("box, message", [
    ([0.2, 0.2, 1.5, 0.9], "outside \\[0, 1\\]"),
    ([0.6, 0.2, 0.3, 0.9], "x1 > x2"),
    ([0.2, 0.7, 0.3, 0.1], "y1 > y2"),
    ([0.2, 0.2, 0.2, 0.9], "zero area"),
    ([2.0, 3.0, 10.0, 12.0], "outside"),  # a call in official grid units fails loudly
])
def test_bad_boxes_raise(box, message):
    model = FGCLIPModel(FGCLIPConfig.tiny()).eval()
    with pytest.raises(ValueError, match=message):
        model.get_image_box_roi_features(torch.randn(1, 3, 32, 32), [torch.tensor([box])])


def test_bad_text_and_checkpoint_inputs(tmp_path):
    model = FGCLIPModel(FGCLIPConfig.tiny()).eval()
    cfg = model.config
    with pytest.raises(ValueError, match="longer than the long text length"):
        model.get_text_features(text_ids(cfg, 1, cfg.long_max_len + 1), walk_short_pos=False)
    with pytest.raises(ValueError, match="longer than the short"):
        model.get_text_features(text_ids(cfg, 1, cfg.short_max_len + 1))
    with pytest.raises(ValueError, match="no eos token"):
        model.get_text_features(torch.zeros(1, 5, dtype=torch.long))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "bert" / "model.safetensors"))
    with pytest.raises(ValueError, match="model_type='bert'"):
        FGCLIPModel.from_pretrained(tmp_path / "bert")
    clip = tiny_clip()
    clip.save_pretrained(tmp_path / "broken")
    state = {k: v.contiguous() for k, v in clip.state_dict().items() if k != "visual_projection.weight"}
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(tmp_path / "broken" / "model.safetensors"))
    with pytest.raises(ValueError, match="missing keys \\['visual_projection.weight'\\].*unexpected keys \\['extra"):
        FGCLIPModel.from_pretrained(tmp_path / "broken")


def test_sdpa_and_gradient_checkpointing_give_the_same_gradients():
    from test_losses import make_batch

    torch.manual_seed(0)
    model = FGCLIPModel(FGCLIPConfig.tiny())
    assert model.config._attn_implementation == "sdpa"
    batch = make_batch(model.config)
    model(**batch)["loss"].backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    model(**batch)["loss"].backward()
    for name, grad in plain.items():
        assert torch.allclose(grad, dict(model.named_parameters())[name].grad, atol=1e-5), name
