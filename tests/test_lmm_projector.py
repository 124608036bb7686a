"""Projector registry, HF LLaVA names, exact export to a stock LlavaMultiModalProjector, size-mismatch errors."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

from fgclip_lmm.lmm.projector import (
    build_projector,
    load_projector,
    normalize_projector_keys,
    read_projector_state,
    to_hf_projector,
)


def _stock(act: str, vision: int, text: int) -> LlavaMultiModalProjector:
    config = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=vision, num_attention_heads=2).to_dict(),
                         text_config=LlamaConfig(hidden_size=text, num_attention_heads=2).to_dict(),
                         projector_hidden_act=act)
    return LlavaMultiModalProjector(config)


def test_names_follow_hf_llava():
    assert sorted(build_projector("mlp2x_gelu", 8, 16).state_dict()) == [
        "linear_1.bias", "linear_1.weight", "linear_2.bias", "linear_2.weight"]
    assert sorted(build_projector("linear", 8, 16).state_dict()) == ["linear_1.bias", "linear_1.weight"]
    assert [k for k in build_projector("mlp3x_gelu", 8, 16).state_dict() if k.endswith("weight")] == [
        "linear_1.weight", "linear_2.weight", "linear_3.weight"]
    assert list(build_projector("identity", 8, 8).state_dict()) == []


def test_unknown_projector_lists_known_types():
    with pytest.raises(ValueError, match=r"unknown projector type 'mlp2x_relu'; known: identity, linear, mlp<N>x_gelu"):
        build_projector("mlp2x_relu", 8, 16)
    with pytest.raises(ValueError, match="identity projector needs equal sizes: "
                                         "tower hidden_size 8 != LLM hidden_size 16"):
        build_projector("identity", 8, 16)


@pytest.mark.parametrize("name,vision,text", [("mlp2x_gelu", 8, 16), ("linear", 8, 16), ("mlp1x_gelu", 8, 16),
                                              ("identity", 16, 16)])
def test_export_to_stock_projector_is_exact(name, vision, text):
    torch.manual_seed(0)
    ours = build_projector(name, vision, text)
    hf = to_hf_projector(ours, vision, text)
    stock = _stock(hf.hidden_act, vision, text)
    stock.load_state_dict(hf.state_dict, strict=True)
    x = torch.randn(2, 5, vision)
    torch.testing.assert_close(stock(x), ours(x))
    assert hf.hidden_act == ("gelu" if name == "mlp2x_gelu" else "linear")


def test_deep_mlp_refuses_stock_export_and_says_why():
    with pytest.raises(ValueError, match="mlp3x_gelu has 3 linear layers.*holds exactly two"):
        to_hf_projector(build_projector("mlp3x_gelu", 8, 16), 8, 16)
    x = torch.randn(3, 8)
    deep = build_projector("mlp3x_gelu", 8, 16)
    want = deep.linear_3(torch.nn.functional.gelu(deep.linear_2(torch.nn.functional.gelu(deep.linear_1(x)))))
    torch.testing.assert_close(deep(x), want)


def test_original_llava_and_hf_keys_normalise():
    w1, b1, w2, b2 = torch.randn(16, 8), torch.randn(16), torch.randn(16, 16), torch.randn(16)
    llava = {"model.mm_projector.0.weight": w1, "model.mm_projector.0.bias": b1,
             "model.mm_projector.2.weight": w2, "model.mm_projector.2.bias": b2, "model.embed_tokens.weight": w2}
    hf = {"model.multi_modal_projector.linear_1.weight": w1, "model.multi_modal_projector.linear_1.bias": b1,
          "model.multi_modal_projector.linear_2.weight": w2, "model.multi_modal_projector.linear_2.bias": b2}
    want = {"linear_1.weight": w1, "linear_1.bias": b1, "linear_2.weight": w2, "linear_2.bias": b2}
    assert normalize_projector_keys(llava).keys() == want.keys() == normalize_projector_keys(hf).keys()
    assert normalize_projector_keys({"mm_projector.weight": w1}) == {"linear_1.weight": w1}


def test_loaded_projector_size_mismatch_names_both_sizes(tmp_path):
    source = build_projector("mlp2x_gelu", 768, 16)
    path = tmp_path / "projector.safetensors"
    save_file({f"multi_modal_projector.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(path))
    loaded = load_projector("mlp2x_gelu", path, 768, 16)
    torch.testing.assert_close(loaded.linear_2.weight, source.linear_2.weight)
    with pytest.raises(ValueError, match=r"expects vision hidden size 768 .* but the tower has hidden_size 1024"):
        load_projector("mlp2x_gelu", path, 1024, 16)
    with pytest.raises(ValueError, match="outputs size 16 but the LLM has hidden_size 32"):
        load_projector("mlp2x_gelu", path, 768, 32)
    with pytest.raises(ValueError, match="do not fit type 'linear'"):
        load_projector("linear", path, 768, 16)
    torch.save({"model.mm_projector.0.weight": source.linear_1.weight.detach()}, tmp_path / "mm_projector.bin")
    assert set(read_projector_state(tmp_path / "mm_projector.bin")) == {"linear_1.weight"}
