"""`fgclip-lmm assemble` on tiny Llama and Qwen2 LLMs: stock config/processor, token counts, embedding init,
tower swap, training/inference prompt parity, the training forward and per-component trainability."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForCausalLM, AutoProcessor, AutoTokenizer, LlavaForConditionalGeneration
from transformers.utils import logging

from fgclip_lmm.commands.assemble import main
from fgclip_lmm.lmm.assemble import AssembleConfig, assemble, read_meta
from fgclip_lmm.lmm.dataset import LmmCollator, dummy_pixel_values, image_seq_length
from fgclip_lmm.lmm.encode import encode_sample
from fgclip_lmm.lmm.export import save_projector
from fgclip_lmm.lmm.forward import lmm_forward
from fgclip_lmm.lmm.templates import get_template
from fgclip_lmm.lmm.tuning import LmmTuning, apply_tuning, lora_target_regex
from fgclip_lmm.testing import write_tiny_clip, write_tiny_siglip
from fgclip_lmm.tower import runs_without_grad

logging.set_verbosity_error()
logging.disable_progress_bar()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llama, tiny_qwen):
    root = tmp_path_factory.mktemp("asm")
    ns = types.SimpleNamespace(root=root)
    ns.fgclip = write_tiny_clip(root / "fgclip", hidden=32, seed=1)
    ns.clip = write_tiny_clip(root / "clip", hidden=48, heads=4, seed=2)
    ns.siglip = write_tiny_siglip(root / "siglip", hidden=32)
    ns.llama, ns.qwen = tiny_llama, tiny_qwen
    for name, tower, llm in (("fg_llama", f"fgclip:{ns.fgclip}", ns.llama), ("clip_llama", f"clip:{ns.clip}", ns.llama),
                             ("fg_qwen", f"fgclip:{ns.fgclip}", ns.qwen)):
        assert main(["--tower", tower, "--llm", str(llm), "--out", str(root / name)]) == 0
        setattr(ns, name, root / name)
    return ns


def _image(seed=0, size=(30, 20)):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _chat_inputs(processor, question="what color is the cube?"):
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(msgs, add_generation_prompt=True)
    return processor(images=_image(), text=prompt, return_tensors="pt")


@pytest.mark.parametrize("name,template,stop", [("fg_llama", "vicuna_v1", "</s>"), ("fg_qwen", "qwen2", "<|im_end|>")])
def test_assembled_checkpoint_is_stock_llava(world, name, template, stop):
    out = getattr(world, name)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava" and config["architectures"] == ["LlavaForConditionalGeneration"]
    assert config["vision_config"]["model_type"] == "clip_vision_model"
    assert (config["image_seq_length"], config["vision_feature_layer"], config["vision_feature_select_strategy"],
            config["projector_hidden_act"]) == (4, -2, "default", "gelu")
    proc = json.loads((out / "processor_config.json").read_text())
    assert (proc["patch_size"], proc["num_additional_image_tokens"], proc["vision_feature_select_strategy"],
            proc["image_token"], proc["image_processor"]["do_pad"]) == (14, 1, "default", "<image>", True)
    model = LlavaForConditionalGeneration.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template == processor.chat_template == get_template(template).chat_template()
    assert tok.convert_tokens_to_ids("<image>") == model.config.image_token_id and tok.pad_token is not None
    assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids(stop)
    inputs = _chat_inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 4 == image_seq_length(processor)
    assert model(**inputs).logits.shape[:2] == inputs["input_ids"].shape
    assert read_meta(out)["template"] == template and read_meta(out)["aspect"] == "pad"


@pytest.mark.parametrize("name,template", [("fg_llama", "vicuna_v1"), ("fg_qwen", "qwen2")])
def test_training_encoding_matches_inference_prompt(world, name, template):
    processor = AutoProcessor.from_pretrained(getattr(world, name))
    sample = {"id": "x", "image": "a.png", "conversations": [
        {"from": "human", "value": "what color is the cube?\n<image>"}, {"from": "gpt", "value": "red"}]}
    enc = encode_sample(sample, processor.tokenizer, template, image_seq_length(processor), 512)
    prompt_ids = _chat_inputs(processor)["input_ids"][0].tolist()
    first_label = next(i for i, lab in enumerate(enc.labels) if lab != -100)
    assert enc.input_ids[:first_label] == prompt_ids


def test_new_embedding_rows_are_drawn_near_the_mean(world):
    src = AutoModelForCausalLM.from_pretrained(world.llama)
    n_old = len(AutoTokenizer.from_pretrained(world.llama))
    model = LlavaForConditionalGeneration.from_pretrained(world.fg_llama)
    for old, new in ((src.get_input_embeddings().weight, model.get_input_embeddings().weight),
                     (src.get_output_embeddings().weight, model.get_output_embeddings().weight)):
        assert new.shape[0] % 64 == 0 and new.shape[0] > n_old
        torch.testing.assert_close(new[:n_old], old[:n_old])  # existing rows untouched
        mu = old[:n_old].mean(0)
        spread = (old[:n_old] - mu).norm(dim=1).mean()
        dist = (new[n_old:] - mu).norm(dim=1)
        assert dist.max() < 0.02 * spread and dist.min() > 0  # N(mu, 1e-5 Σ): std ~ 0.003 x spread, not exactly mu
        assert not torch.allclose(new[n_old], new[n_old + 1])
    qwen = LlavaForConditionalGeneration.from_pretrained(world.fg_qwen)
    image_row = qwen.get_input_embeddings().weight[qwen.config.image_token_id]
    base = AutoModelForCausalLM.from_pretrained(world.qwen).get_input_embeddings().weight
    assert qwen.get_input_embeddings().weight.shape == base.shape  # fits in the spare rows: no resize
    assert (image_row - base[: qwen.config.image_token_id].mean(0)).norm() < 0.02 * base.norm(dim=1).mean()
    assert qwen.lm_head.weight.data_ptr() == qwen.get_input_embeddings().weight.data_ptr()  # still tied


def test_tower_swap_keeps_the_llm_and_resizes_the_projector(world, tmp_path):
    fg = LlavaForConditionalGeneration.from_pretrained(world.fg_llama)
    clip = LlavaForConditionalGeneration.from_pretrained(world.clip_llama)
    fg_lm, clip_lm = fg.model.language_model.state_dict(), clip.model.language_model.state_dict()
    assert fg_lm.keys() == clip_lm.keys() and all(torch.equal(fg_lm[k], clip_lm[k]) for k in fg_lm)
    assert fg.model.multi_modal_projector.linear_1.in_features == 32
    assert clip.model.multi_modal_projector.linear_1.in_features == 48
    inputs = _chat_inputs(AutoProcessor.from_pretrained(world.clip_llama))
    assert torch.isfinite(clip(**inputs).logits).all()
    path = save_projector(fg, tmp_path / "projector.safetensors")
    with pytest.raises(ValueError, match="expects vision hidden size 32 .* but the tower has hidden_size 48"):
        main(["--tower", f"clip:{world.clip}", "--llm", str(world.llama), "--out", str(tmp_path / "x"),
              "--projector-weights", str(path)])
    reused = tmp_path / "reused"
    assert main(["--tower", f"fgclip:{world.fgclip}", "--llm", str(world.llama), "--out", str(reused),
                 "--projector-weights", str(path)]) == 0
    again = LlavaForConditionalGeneration.from_pretrained(reused).model.multi_modal_projector
    torch.testing.assert_close(again.linear_1.weight, fg.model.multi_modal_projector.linear_1.weight)


@pytest.mark.parametrize("tower,select,count,strategy",
                         [("clip", "cls_patch", 5, "full"), ("siglip", "patch", 4, "full")])
def test_select_strategy_and_token_count_reach_the_processor(world, tower, select, count, strategy):
    path = world.clip if tower == "clip" else world.siglip
    model, processor, _ = assemble(AssembleConfig(tower=f"{tower}:{path}", llm=str(world.qwen), select=select,
                                                  projector="linear", aspect="resize"))
    assert (model.config.vision_feature_select_strategy, model.config.image_seq_length) == (strategy, count)
    inputs = _chat_inputs(processor)
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == count == image_seq_length(processor)
    assert inputs["pixel_values"].shape[-2:] == (28, 28) and model(**inputs).logits.isfinite().all()


def _batch(processor, with_text_only=True):
    tok, n = processor.tokenizer, image_seq_length(processor)
    img = {"id": "a", "image": "a",
           "conversations": [{"from": "human", "value": "<image>\ncolor?"}, {"from": "gpt", "value": "red"}]}
    txt = {"id": "b", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello there"}]}
    items = []
    image_pixels = processor.image_processor(images=_image(), return_tensors="pt")["pixel_values"]
    for sample, pixels, real in ((img, image_pixels, True), (txt, dummy_pixel_values(processor), False)):
        if not real and not with_text_only:
            continue
        enc = encode_sample(sample, tok, "vicuna_v1", n, 512)
        items.append({"input_ids": torch.tensor(enc.input_ids), "labels": torch.tensor(enc.labels),
                      "pixel_values": pixels, "image_mask": torch.tensor([real])})
    return LmmCollator(tok.pad_token_id)(items)


def test_training_forward_matches_stock_forward_and_keeps_dummies_in_graph(world):
    model = LlavaForConditionalGeneration.from_pretrained(world.fg_llama)
    processor = AutoProcessor.from_pretrained(world.fg_llama)
    batch = _batch(processor, with_text_only=False)
    stock = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  pixel_values=batch["pixel_values"],
                  labels=batch["labels"])
    ours = lmm_forward(model, **batch)
    torch.testing.assert_close(ours.logits, stock.logits)
    torch.testing.assert_close(ours.loss, stock.loss)
    mixed = _batch(processor)
    trainable = apply_tuning(model, LmmTuning(llm="frozen", tower="full", projector="full"))
    out = lmm_forward(trainable, **mixed)
    assert mixed["pixel_values"].shape[0] == 2 and mixed["image_mask"].tolist() == [True, False]
    out.loss.backward()
    assert all(p.grad is not None for p in model.model.multi_modal_projector.parameters())
    with pytest.raises(ValueError, match="4 image-token positions in input_ids but 0 real image"):
        lmm_forward(model, **{**mixed, "image_mask": torch.tensor([False, False])})


@pytest.mark.parametrize("tuning,expect", [
    (LmmTuning(llm="frozen", tower="frozen", projector="full"), {"projector"}),
    (LmmTuning(llm="full", tower="frozen"), {"projector", "llm", "lm_head"}),
    (LmmTuning(llm="full", tower="full"), {"projector", "llm", "lm_head", "tower"}),
    (LmmTuning(llm="lora", tower="lora"), {"projector", "llm_lora", "tower_lora"}),
])
def test_trainability_by_gradient_check(world, tuning, expect):
    from fgclip_lmm.lmm.tuning import component_of

    model = LlavaForConditionalGeneration.from_pretrained(world.fg_llama)
    processor = AutoProcessor.from_pretrained(world.fg_llama)
    trainable = apply_tuning(model, tuning)
    if tuning.uses_lora:
        with torch.no_grad():
            for n, p in trainable.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.1)
    lmm_forward(trainable, **_batch(processor)).loss.backward()
    got = set()
    for name, param in trainable.named_parameters():
        key = component_of(name) + ("_lora" if "lora_" in name else "")
        if param.grad is not None and param.grad.abs().sum() > 0:
            got.add(key)
        assert param.requires_grad == (key in expect), name
    assert got == expect
    assert runs_without_grad(model.model.vision_tower) == (tuning.tower == "frozen")


def test_lora_targets_never_hit_projector_or_head(world):
    model = LlavaForConditionalGeneration.from_pretrained(world.fg_llama)
    import re

    pattern = re.compile(lora_target_regex(model, llm=True, tower=True))
    hits = [n for n, _ in model.named_modules() if pattern.fullmatch(n)]
    assert hits and all(n.startswith(("model.language_model.", "model.vision_tower.")) for n in hits)
    assert not any("multi_modal_projector" in n or n == "lm_head" for n in hits)
    assert any(n.endswith("self_attn.q_proj") and "language_model" in n for n in hits)
    assert any(n.endswith("mlp.fc1") and "vision_tower" in n for n in hits)
