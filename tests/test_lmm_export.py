"""Export formats: full checkpoint, LoRA adapter + non-LoRA trainables, `merge-lora`; merged vs unmerged logits;
every saved model loads with stock transformers (+ peft) in a subprocess that never imports fgclip_lmm."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import LlavaForConditionalGeneration
from transformers.utils import logging

from fgclip_lmm.commands.merge_lora import main as merge_main
from fgclip_lmm.lmm.assemble import AssembleConfig, assemble, save_assembly
from fgclip_lmm.lmm.export import NON_LORA_FILE, merge_peft, save_full, save_lora
from fgclip_lmm.lmm.forward import lmm_forward
from fgclip_lmm.lmm.tuning import LmmTuning, apply_tuning

logging.set_verbosity_error()
logging.disable_progress_bar()

STOCK_SCRIPT = r"""
import json, sys
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, LlavaForConditionalGeneration
from transformers.utils import logging
from peft import PeftModel
logging.set_verbosity_error()
jobs = json.loads(sys.argv[1])
out = {}
for name, job in jobs["models"].items():
    inputs = load_file(job.get("inputs", jobs["inputs"]))
    model = LlavaForConditionalGeneration.from_pretrained(job["dir"], dtype=torch.float32).eval()
    if job.get("adapter"):  # the documented stock route for a LoRA directory
        model.load_state_dict(load_file(job["adapter"] + "/non_lora_trainables.safetensors"), strict=False)
        model = PeftModel.from_pretrained(model, job["adapter"]).eval()
    processor = AutoProcessor.from_pretrained(job.get("adapter") or job["dir"])
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": jobs["question"]}]}],
        add_generation_prompt=True)
    ids = processor(text=prompt, images=torch.zeros(3, 20, 30, dtype=torch.uint8), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out[name] = model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"]).logits.contiguous()
    out[name + ".ids"] = ids.contiguous()
assert not any(m == "fgclip_lmm" or m.startswith("fgclip_lmm.") for m in sys.modules), "fgclip_lmm was imported"
save_file(out, jobs["output"])
"""
QUESTION = "what color is the cube?"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_clip, tiny_llama, tiny_qwen):
    """An assembled base, a 'trained' full model and a 'trained' LoRA model, their exports and reference logits."""
    root = tmp_path_factory.mktemp("export")
    ns = types.SimpleNamespace(root=root)
    tower, llm = tiny_clip, tiny_llama
    model, processor, meta = assemble(AssembleConfig(tower=f"fgclip:{tower}", llm=str(llm)))
    ns.base = save_assembly(model, processor, meta, root / "base")
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    batch = processor(text=prompt, images=image, return_tensors="pt")
    ns.inputs = {"input_ids": batch["input_ids"], "pixel_values": batch["pixel_values"]}
    ns.ids_zero_image = processor(text=prompt, images=torch.zeros(3, 20, 30, dtype=torch.uint8),
                                  return_tensors="pt")["input_ids"]
    labels = batch["input_ids"].clone()
    labels[labels == model.config.image_token_id] = -100

    full = LlavaForConditionalGeneration.from_pretrained(ns.base)  # full finetune with a trained tower: one SGD step
    trainable = apply_tuning(full, LmmTuning(llm="full", tower="full"))
    lmm_forward(trainable, **ns.inputs, labels=labels).loss.backward()
    with torch.no_grad():
        for p in trainable.parameters():
            if p.grad is not None:
                p -= 1.0 * p.grad
    full.eval()
    ns.full_logits = full(**ns.inputs).logits.detach()
    ns.full = save_full(full, processor, root / "full", meta=meta)

    lora_base = LlavaForConditionalGeneration.from_pretrained(ns.base)
    peft_model = apply_tuning(lora_base, LmmTuning(llm="lora", tower="frozen"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "multi_modal_projector" in name:
                p.add_(torch.randn_like(p) * 0.2)
    peft_model.eval()
    ns.lora_logits = peft_model(**ns.inputs).logits.detach()
    ns.lora = save_lora(peft_model, processor, root / "lora", meta=meta)
    ns.peft_model = peft_model

    qwen, qwen_processor, qwen_meta = assemble(AssembleConfig(tower=f"clip:{tower}", llm=str(tiny_qwen)))
    ns.qwen = save_assembly(qwen, qwen_processor, qwen_meta, root / "qwen_base")
    qwen_prompt = qwen_processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
        add_generation_prompt=True)
    qwen_batch = qwen_processor(text=qwen_prompt, images=image, return_tensors="pt")
    ns.qwen_inputs = {"input_ids": qwen_batch["input_ids"], "pixel_values": qwen_batch["pixel_values"]}
    ns.qwen_ids_zero_image = qwen_processor(text=qwen_prompt, images=torch.zeros(3, 20, 30, dtype=torch.uint8),
                                            return_tensors="pt")["input_ids"]
    ns.qwen_logits = qwen.eval()(**ns.qwen_inputs).logits.detach()
    return ns


def test_full_checkpoint_round_trip_includes_the_tuned_tower(trained):
    reloaded = LlavaForConditionalGeneration.from_pretrained(trained.full).eval()
    torch.testing.assert_close(reloaded(**trained.inputs).logits, trained.full_logits, rtol=1e-5, atol=1e-5)
    base = LlavaForConditionalGeneration.from_pretrained(trained.base)
    tower_changed = [k for k, v in reloaded.model.vision_tower.state_dict().items()
                     if not torch.equal(v, base.model.vision_tower.state_dict()[k])]
    assert tower_changed  # the trained tower is what got saved
    assert json.loads((trained.full / "config.json").read_text())["text_config"]["use_cache"] is True
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "fgclip_lmm.json",
            "chat_template.jinja", "generation_config.json"} <= {p.name for p in trained.full.iterdir()}
    with pytest.raises(ValueError, match="call merge_peft"):
        save_full(trained.peft_model, None, trained.root / "nope")


def test_lora_directory_holds_adapter_and_non_lora_trainables(trained):
    files = {p.name for p in trained.lora.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", NON_LORA_FILE, "processor_config.json"} <= files
    non_lora = load_file(str(trained.lora / NON_LORA_FILE))
    assert sorted(non_lora) == ["model.multi_modal_projector.linear_1.bias",
                                "model.multi_modal_projector.linear_1.weight",
                                "model.multi_modal_projector.linear_2.bias",
                                "model.multi_modal_projector.linear_2.weight"]
    adapter = load_file(str(trained.lora / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k and "language_model" in k for k in adapter)


def test_merge_lora_cli_matches_unmerged_logits(trained):
    out = trained.root / "merged"
    assert merge_main(["--base", str(trained.base), "--adapter", str(trained.lora), "--out", str(out)]) == 0
    merged = LlavaForConditionalGeneration.from_pretrained(out).eval()
    assert not any("lora_" in k for k in merged.state_dict())
    torch.testing.assert_close(merged(**trained.inputs).logits, trained.lora_logits, rtol=1e-4, atol=1e-4)
    assert (out / "fgclip_lmm.json").is_file() and (out / "processor_config.json").is_file()


def test_merge_lora_rejects_mismatched_non_lora_tensors(trained, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        (bad / f).write_bytes((trained.lora / f).read_bytes())
    save_file({"model.multi_modal_projector.linear_1.weight": torch.zeros(3, 3)}, str(bad / NON_LORA_FILE))
    with pytest.raises(ValueError, match=r"linear_1.weight' has shape \(3, 3\), the base has"):
        merge_main(["--base", str(trained.base), "--adapter", str(bad), "--out", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        merge_main(["--base", str(trained.base), "--adapter", str(tmp_path), "--out", str(tmp_path / "o")])


def test_merge_peft_in_memory_equals_peft_logits(trained):
    clone = LlavaForConditionalGeneration.from_pretrained(trained.base)
    peft_model = apply_tuning(clone, LmmTuning(llm="lora"))
    peft_model.load_state_dict(trained.peft_model.state_dict())
    merged = merge_peft(peft_model).eval()
    torch.testing.assert_close(merged(**trained.inputs).logits, trained.lora_logits, rtol=1e-4, atol=1e-4)


def test_stock_transformers_subprocess_load_parity(trained, tmp_path):
    """Base, full, merged and adapter exports load without fgclip_lmm and give the same logits and input ids."""
    merged = trained.root / "merged_for_stock"
    merge_main(["--base", str(trained.base), "--adapter", str(trained.lora), "--out", str(merged)])
    base_logits = LlavaForConditionalGeneration.from_pretrained(trained.base).eval()(**trained.inputs).logits.detach()
    save_file({k: v.contiguous() for k, v in trained.inputs.items()}, str(tmp_path / "inputs.safetensors"))
    save_file({k: v.contiguous() for k, v in trained.qwen_inputs.items()}, str(tmp_path / "qwen_inputs.safetensors"))
    jobs = {"inputs": str(tmp_path / "inputs.safetensors"), "output": str(tmp_path / "out.safetensors"),
            "question": QUESTION,
            "models": {"base": {"dir": str(trained.base)}, "full": {"dir": str(trained.full)},
                       "merged": {"dir": str(merged)},
                       "adapter": {"dir": str(trained.base), "adapter": str(trained.lora)},
                       "qwen": {"dir": str(trained.qwen), "inputs": str(tmp_path / "qwen_inputs.safetensors")}}}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", STOCK_SCRIPT, json.dumps(jobs)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    got = load_file(str(tmp_path / "out.safetensors"))
    want = {"base": base_logits, "full": trained.full_logits, "merged": trained.lora_logits,
            "adapter": trained.lora_logits}
    for name in ("full", "adapter"):  # training changed the outputs, so parity is a real check
        assert (want[name] - base_logits).abs().max() > 1e-2, name
    for name, logits in want.items():
        torch.testing.assert_close(got[name], logits, rtol=1e-4, atol=1e-4, msg=name)
        assert torch.equal(got[name + ".ids"], trained.ids_zero_image), name
    torch.testing.assert_close(got["qwen"], trained.qwen_logits, rtol=1e-4, atol=1e-4)  # Qwen2-style, tied embeddings
    assert torch.equal(got["qwen.ids"], trained.qwen_ids_zero_image)
