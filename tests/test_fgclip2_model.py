"""FG-CLIP 2 model core: official names, the three checkpoint formats, text walks, NaFlex dense/box features."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_align
from transformers import (
    AutoConfig,
    AutoModel,
    Siglip2Config,
    Siglip2Model,
    Siglip2TextConfig,
    Siglip2TextModel,
)

from fgclip_lmm.commands.convert import main as convert_main
from fgclip_lmm.model import FGCLIP2Config, FGCLIP2Model
from fgclip_lmm.model.naflex import (
    budget_for,
    make_image_processor,
    naflex_batch,
    naflex_roi_features,
)
from fgclip_lmm.model.positions import stretch_positions
from fgclip_lmm.testing.fgclip2 import (
    make_batch,
    naflex_inputs,
    official_keys,
    text_ids,
    tiny_model,
    write_official_checkpoint,
)


def test_stretch_64_to_196_matches_the_official_rule_row_by_row():
    pre = torch.randn(64, 5, dtype=torch.float64)
    new = stretch_positions(pre, 196, keep_len=20, stretch=4)
    assert new.shape == (196, 5) and torch.equal(new[:20], pre[:20])
    for i in range(43):
        for m in range(4):
            want = (4 - m) * pre[20 + i] / 4 + m * pre[21 + i] / 4
            torch.testing.assert_close(new[20 + 4 * i + m], want, rtol=0, atol=1e-12)
    for m in range(4):
        torch.testing.assert_close(new[192 + m], pre[63] + m * (pre[63] - pre[62]) / 4, rtol=0, atol=1e-12)
    assert FGCLIP2Config.tiny().stretch_is_official


def test_state_dict_names_round_trip_and_auto(tmp_path):
    model = tiny_model()
    assert set(model.state_dict()) == official_keys(model.config) | {"criterion.hard_loss.cmr_threshold"}
    assert model.logit_scale.shape == model.logit_bias.shape == (1,) and model.logit_scale_hardneg.shape == ()
    with torch.no_grad():
        model.criterion.cmr_threshold.fill_(1.25)
    model.save_pretrained(tmp_path / "ours")
    loaded = FGCLIP2Model.from_pretrained(tmp_path / "ours")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    auto = AutoModel.from_pretrained(tmp_path / "ours")
    assert isinstance(auto, FGCLIP2Model) and isinstance(AutoConfig.from_pretrained(tmp_path / "ours"), FGCLIP2Config)
    assert auto.criterion.cmr_threshold.item() == 1.25 and auto.config.longtext_len == 196
    ids, inputs = text_ids(model.config, 2, 196), naflex_inputs(model.config)
    with torch.no_grad():  # non-persistent buffers (the position ids of every walk) are rebuilt on load
        for walk in ("long", "short", "box"):
            width = 196 if walk == "long" else 64
            torch.testing.assert_close(auto.get_text_features(ids[:, :width], walk_type=walk),
                                       model.eval().get_text_features(ids[:, :width], walk_type=walk))
        torch.testing.assert_close(auto.get_image_features(**inputs), model.get_image_features(**inputs))


@pytest.mark.parametrize("with_fine_scales", [True, False])
def test_official_directory_loads_without_executing_its_code(tmp_path, with_fine_scales):
    src = tiny_model(seed=1).eval()
    with torch.no_grad():
        src.logit_scale_finegraind.fill_(3.0)
        src.logit_scale_hardneg.fill_(2.5)
    marker = write_official_checkpoint(src, tmp_path / "official", with_fine_scales)
    model = FGCLIP2Model.from_pretrained(tmp_path / "official")
    auto = AutoModel.from_pretrained(tmp_path / "official")  # the registered local class, never the auto_map
    assert not marker.exists() and isinstance(auto, FGCLIP2Model)
    for key, value in src.state_dict().items():
        if key.startswith("logit_scale_") and not with_fine_scales:
            assert model.state_dict()[key].item() == pytest.approx(4.6052)  # the official trainer's start
        else:
            assert torch.equal(value, model.state_dict()[key]), key
    if not with_fine_scales:
        return
    out = tmp_path / "converted"
    assert convert_main([str(tmp_path / "official"), str(out)]) == 0  # the `fgclip-lmm convert` entry point
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "fgclip2" and "auto_map" not in config and config["longtext_len"] == 196
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert "auto_map" not in processor and processor["max_num_patches"] == 64
    again = FGCLIP2Model.from_pretrained(out)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    assert not marker.exists()


def _siglip2(seed=0) -> Siglip2Model:
    torch.manual_seed(seed)
    fg = FGCLIP2Config.tiny()
    config = Siglip2Config(text_config=fg.text_config.to_dict(), vision_config=fg.vision_config.to_dict())
    model = Siglip2Model(config).eval()
    with torch.no_grad():
        model.logit_scale.fill_(2.0)
    return model


def test_siglip2_initialisation_keeps_siglip2_features_and_copies_heads(tmp_path):
    siglip = _siglip2()
    siglip.save_pretrained(tmp_path / "siglip2")
    model = FGCLIP2Model.from_pretrained(tmp_path / "siglip2")
    cfg = model.config
    ids, mask = text_ids(cfg, 4, 64, seed=3), None
    inputs = naflex_inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(model.get_text_features(ids, walk_type="short"),
                                   siglip.get_text_features(input_ids=ids, attention_mask=mask).pooler_output,
                                   rtol=0, atol=1e-5)
        torch.testing.assert_close(model.get_image_features(**inputs),
                                   siglip.get_image_features(**inputs).pooler_output, rtol=0, atol=1e-5)
        # box walk = short walk before the head; boxtext_head is a copy of text_model.head
        torch.testing.assert_close(model.get_text_features(ids, walk_type="box"),
                                   model.get_text_features(ids, walk_type="short"), rtol=0, atol=0)
    emb = model.text_model.embeddings
    table = stretch_positions(siglip.text_model.embeddings.position_embedding.weight, 196, 20, 4)
    assert torch.equal(emb.position_embedding_ori.weight, table)
    assert torch.equal(emb.position_embedding_res.weight, table)
    for name in ("weight", "bias"):
        for head in (model.longtext_head, model.boxtext_head):
            assert torch.equal(getattr(head, name), getattr(siglip.text_model.head, name))
    for name, value in siglip.vision_model.head.state_dict().items():
        assert torch.equal(model.dense_feature_head.state_dict()[name], value), name
    assert model.logit_scale.item() == 2.0 and model.logit_scale_hardneg.item() == pytest.approx(4.6052)


def test_short_walk_masked_and_unmasked_equal_siglip2_text_model():
    model = tiny_model().eval()
    cfg = model.config
    reference = Siglip2TextModel(Siglip2TextConfig(**cfg.text_config.to_dict())).eval()
    reference.load_state_dict({k[len("text_model."):]: v for k, v in model.state_dict().items()
                               if k.startswith("text_model.") and "_ori" not in k and "_res" not in k})
    ids = text_ids(cfg, 3, 64, real=9)
    mask = (torch.arange(64)[None] < 9).long().expand(3, -1)
    with torch.no_grad():
        unmasked, masked = model.get_text_features(ids), model.get_text_features(ids, attention_mask=mask)
        torch.testing.assert_close(unmasked, reference(input_ids=ids).pooler_output, rtol=0, atol=1e-6)
        torch.testing.assert_close(masked, reference(input_ids=ids, attention_mask=mask).pooler_output,
                                   rtol=0, atol=1e-6)
        assert (masked - unmasked).abs().max() > 1e-3  # the two protocols really differ
        changed = ids.clone()
        changed[:, 20:40] = 5  # padded keys: invisible under the mask, visible without
        assert torch.allclose(model.get_text_features(changed, attention_mask=mask), masked, atol=1e-6)
        assert not torch.allclose(model.get_text_features(changed), unmasked, atol=1e-4)


def test_long_walk_uses_ori_below_keep_len_and_res_above():
    model = tiny_model().eval()
    cfg, emb = model.config, model.text_model.embeddings
    ids = text_ids(cfg, 2, 196)
    with torch.no_grad():
        emb.position_embedding_res.weight.normal_()
        # a plain SigLIP 2 text model with a 196-row table = ori[:20] ++ res[20:] and longtext_head as its head
        long_cfg = Siglip2TextConfig(**{**cfg.text_config.to_dict(), "max_position_embeddings": 196})
        reference = Siglip2TextModel(long_cfg).eval()
        state = {k[len("text_model."):]: v for k, v in model.state_dict().items() if k.startswith("text_model.")}
        state["embeddings.position_embedding.weight"] = torch.cat([emb.position_embedding_ori.weight[:20],
                                                                  emb.position_embedding_res.weight[20:]])
        state["head.weight"], state["head.bias"] = model.longtext_head.weight, model.longtext_head.bias
        reference.load_state_dict({k: v for k, v in state.items() if "_ori" not in k and "_res" not in k})
        torch.testing.assert_close(model.get_text_features(ids, walk_type="long"),
                                   reference(input_ids=ids).pooler_output, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="exactly 196 tokens"):
        model.get_text_features(ids[:, :100], walk_type="long")
    with pytest.raises(ValueError, match="walk_type='longer'; known: short, box, long"):
        model.get_text_features(ids, walk_type="longer")


def _dense_reference(model: FGCLIP2Model, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official dense head in float64: MHA(q=k=v=x) with an additive finfo.min key mask, then x + MLP(LN(x))."""
    head = model.dense_feature_head.double()
    b, n, d = x.shape
    heads = head.num_heads
    q, k, v = F.linear(x, head.attention.in_proj_weight, head.attention.in_proj_bias).chunk(3, dim=-1)

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(b, n, heads, d // heads).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-1, -2) / (d // heads) ** 0.5
    scores = scores + (1 - mask[:, None, None, :].double()) * torch.finfo(torch.float64).min
    attn = (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, n, d)
    attn = head.attention.out_proj(attn)
    out = attn + head.mlp(head.layernorm(attn))
    model.dense_feature_head.float()
    return out


def test_dense_features_and_box_features_match_the_official_per_image_computation():
    model = tiny_model().eval()
    inputs = naflex_inputs(model.config)
    with torch.no_grad():
        hidden = model.vision_model(**inputs).last_hidden_state
        dense = model.get_image_dense_features(**inputs)
        torch.testing.assert_close(dense.double(), _dense_reference(model, hidden.double(),
                                                                    inputs["pixel_attention_mask"]),
                                   rtol=0, atol=1e-5)
        boxes = [torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 0.2, 1.0, 0.9]]), torch.tensor([[0.1, 0.6, 0.7, 1.0]]),
                 torch.tensor([[0.0, 0.0, 0.3, 0.2], [0.25, 0.25, 1.0, 1.0], [0.9, 0.0, 1.0, 1.0]])]
        got = model.get_image_box_roi_features(**inputs, box_info=boxes)
        want = []
        for b, (h, w) in enumerate(inputs["spatial_shapes"].tolist()):  # the official loop, one grid at a time
            grid = dense[b, : h * w].reshape(1, h, w, -1).permute(0, 3, 1, 2)
            scaled = boxes[b] * torch.tensor([w, h, w, h], dtype=torch.float32)
            want.append(roi_align(grid.float(), [scaled], (1, 1), 1.0, -1, True)[..., 0, 0])
        torch.testing.assert_close(got, F.normalize(torch.cat(want), dim=-1), rtol=0, atol=1e-6)
        h, w = inputs["spatial_shapes"][0].tolist()
        whole = naflex_roi_features(dense, inputs["spatial_shapes"], torch.tensor([[0.0, 0, 0, 1, 1]]))
        torch.testing.assert_close(whole[0], dense[0, : h * w].mean(0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("box, message", [([0.2, 0.2, 1.5, 0.9], "outside \\[0, 1\\]"),
                                          ([0.6, 0.2, 0.3, 0.9], "x1 > x2"),
                                          ([2.0, 3.0, 10.0, 12.0], "outside")])
def test_bad_boxes_and_shapes_raise(box, message):
    model = tiny_model().eval()
    inputs = naflex_inputs(model.config, shapes=((3, 5),))
    with pytest.raises(ValueError, match=message):
        model.get_image_box_roi_features(**inputs, box_info=[torch.tensor([box])])
    inputs["spatial_shapes"] = torch.tensor([[4, 5]])
    with pytest.raises(ValueError, match=r"spatial_shapes\[0\] = \[4, 5\].*15 tokens"):
        model.get_image_features(**inputs)


def test_transformers_naflex_processor_is_the_described_one_and_the_budget_rule():
    processor = make_image_processor(patch_size=8, max_num_patches=16)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (24, 48, 3), dtype=np.uint8))  # 3 x 6 native grid of 8 px
    out = naflex_batch(processor, [image], max_num_patches=20)  # the largest 1:2 grid within 20 patches is 3 x 6
    h, w = out["spatial_shapes"][0].tolist()
    assert (h, w) == (3, 6) and out["pixel_attention_mask"][0].tolist() == [1] * 18 + [0, 0]
    assert out["pixel_values"].shape == (1, 20, 192)
    array = (np.asarray(image, dtype=np.float32) / 255.0 - 0.5) / 0.5  # same size: no resize
    patches = array.reshape(3, 8, 6, 8, 3).transpose(0, 2, 1, 3, 4).reshape(18, 192)  # (py, px, c), row-major
    np.testing.assert_allclose(out["pixel_values"][0, :18].numpy(), patches, atol=1e-6)
    assert out["pixel_values"][0, 18:].abs().sum() == 0
    assert naflex_batch(processor, [image], max_num_patches=8)["spatial_shapes"][0].tolist() == [2, 4]  # down
    assert naflex_batch(processor, [image], max_num_patches=32)["spatial_shapes"][0].tolist() == [4, 8]  # up
    assert [budget_for(s, s) for s in (100, 181, 192, 256, 384, 448, 512, 1000)] == [128, 128, 256, 256, 576, 784,
                                                                                       1024, 1024]
    assert naflex_batch(processor, [image], max_num_patches="dynamic")["pixel_values"].shape[1] == 128


def test_training_forward_rejects_unpadded_short_texts():
    model = tiny_model()
    batch = make_batch(model.config)
    batch["short_input_ids"] = batch["short_input_ids"][:, :20]
    with pytest.raises(ValueError, match="padded to 64 tokens"):
        model(**batch)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_model()
    batch = make_batch(model.config)
    assert model.config._attn_implementation == "sdpa"
    model.train()
    model(**batch)["loss"].backward()
    plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    with torch.no_grad():
        model.criterion.cmr_threshold.zero_()  # the first forward moved the margin; start the second from the same
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model(**batch)["loss"].backward()
    assert model.text_model.encoder.gradient_checkpointing and model.vision_model.encoder.gradient_checkpointing
    for name, grad in plain.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=0, atol=1e-5)
