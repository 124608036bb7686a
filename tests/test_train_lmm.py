"""train_lmm on the DeepSpeed engine: align -> finetune (full, ZeRO-3) and LoRA, on a tiny assembled LMM."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fgclip_lmm.lmm.assemble import AssembleConfig, assemble, save_assembly
from fgclip_lmm.model import FGCLIPConfig, FGCLIPModel
from fgclip_lmm.testing import write_tiny_llm

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "FGCLIP_TEST_MARKERS": "1"}  # FGCLIP_TRAIN_DONE / FGCLIP_PARAM_CHECKSUM lines


@pytest.fixture(scope="module")
def setup(tmp_path_factory, mini_world):
    root = tmp_path_factory.mktemp("lmm")
    world = mini_world
    torch.manual_seed(0)
    FGCLIPModel(FGCLIPConfig.tiny(image_size=32, patch_size=8)).save_pretrained(root / "fgclip")
    llm = write_tiny_llm(root / "llm", texts=["what colour is the square? red", "describe the picture"] * 3)
    model, processor, meta = assemble(AssembleConfig(tower=f"fgclip:{root / 'fgclip'}", llm=str(llm)))
    save_assembly(model, processor, meta, root / "assembled")
    records = []
    for i, item in enumerate(map(json.loads, world["pairs"].read_text().splitlines())):
        records.append({"id": f"c{i}", "image": item["image"], "conversations": [
            {"from": "human", "value": "<image>\nWhat is in the picture?"},
            {"from": "gpt", "value": item["short_caption"]},
            {"from": "human", "value": "Describe it."}, {"from": "gpt", "value": item["long_caption"]}]})
    records.append({"id": "text-only", "conversations": [{"from": "human", "value": "Say hi."},
                                                          {"from": "gpt", "value": "hi"}]})
    (root / "llava.json").write_text(json.dumps(records))
    return {"root": root, "images": world["images"], "data": root / "llava.json", "assembled": root / "assembled"}


def run_proc(setup, out, *extra, env=ENV):
    argv = [sys.executable, "-m", "fgclip_lmm.cli", "train-lmm", "--model", str(setup["assembled"]),
            "--data_path", str(setup["data"]), "--image_root", str(setup["images"]), "--micro_batch_size", "2",
            "--num_workers", "0", "--precision", "fp32", "--log_every", "1", "--model_max_length", "256",
            "--deepspeed_config", "none", "--output_dir", str(out), *extra]
    proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "FGCLIP_TRAIN_DONE" in proc.stdout, (proc.stdout + proc.stderr)[-4000:]
    return proc


def run(setup, out, *extra):
    run_proc(setup, out, *extra)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_align_then_finetune_zero3_then_lora(setup, tmp_path):
    from transformers import LlavaForConditionalGeneration

    align = run(setup, tmp_path / "align", "--stage", "align", "--max_steps", "3", "--lr", "1e-2",
                "--zero_stage", "2")
    assert all(m["loss"] == m["loss"] for m in align) and (tmp_path / "align" / "mm_projector.safetensors").is_file()
    assert all(m["image_norm_ratio"] > 0 and -1 <= m["image_cosine"] <= 1 for m in align)  # health, every log step
    before = LlavaForConditionalGeneration.from_pretrained(setup["assembled"])
    after = LlavaForConditionalGeneration.from_pretrained(tmp_path / "align" / "hf")
    changed = {n for n, p in after.named_parameters() if not torch.equal(p, before.state_dict()[n])}
    assert changed and all("multi_modal_projector" in n for n in changed)  # align trains the projector only

    ft = run(setup, tmp_path / "ft", "--stage", "finetune", "--model", str(tmp_path / "align" / "hf"), "--max_steps",
             "2",
        "--zero_stage", "3", "--lr", "1e-3")
    assert all("image_norm_ratio" in m for m in ft)  # the hooks see the tokens under ZeRO-3 too
    tuned = LlavaForConditionalGeneration.from_pretrained(tmp_path / "ft" / "hf")
    changed = {n for n, p in tuned.named_parameters() if not torch.equal(p, after.state_dict()[n])}
    assert any("language_model" in n for n in changed) and not any("vision_tower" in n for n in changed)

    run(setup, tmp_path / "lora", "--stage", "finetune", "--model", str(tmp_path / "align" / "hf"),
        "--llm_tuning", "lora", "--lora_r", "4", "--lora_alpha", "8", "--max_steps", "2", "--zero_stage", "2",
        "--lr", "1e-2")
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    merged = LlavaForConditionalGeneration.from_pretrained(tmp_path / "lora" / "hf")
    assert any(not torch.equal(p, after.state_dict()[n]) for n, p in merged.named_parameters()
               if "language_model" in n)


def test_match_text_projector_init_starts_align_at_the_text_scale(setup, tmp_path):
    from transformers import LlavaForConditionalGeneration

    keep = run(setup, tmp_path / "keep", "--stage", "align", "--max_steps", "1", "--lr", "1e-9", "--zero_stage", "2")
    proc = run_proc(setup, tmp_path / "match", "--stage", "align", "--max_steps", "1", "--lr", "1e-9",
                    "--zero_stage", "2", "--projector_init", "match_text")
    assert "projector_init match_text on 16 samples: image/text RMS ratio" in proc.stdout
    match = [json.loads(line) for line in (tmp_path / "match" / "metrics.jsonl").read_text().splitlines()]
    # step 1's forward ran before any update: the assembled projector vs the rewritten one
    assert abs(keep[0]["image_norm_ratio"] - 1) > 0.5
    assert match[0]["image_norm_ratio"] == pytest.approx(1.0, abs=0.15)
    assert match[0]["image_cosine"] < keep[0]["image_cosine"]
    model = LlavaForConditionalGeneration.from_pretrained(tmp_path / "match" / "hf")  # still a stock LLaVA
    assert set(dict(model.model.multi_modal_projector.named_children())) == {"linear_1", "act", "linear_2"}


def test_sigkill_and_resume_continue_the_same_trajectory(setup, tmp_path):
    common = ("--stage", "finetune", "--max_steps", "4", "--save_every", "2", "--zero_stage", "2", "--lr", "1e-3",
              "--group_by_modality_length", "true")
    full = run(setup, tmp_path / "full", *common)
    argv = [sys.executable, "-m", "fgclip_lmm.cli", "train-lmm", "--model", str(setup["assembled"]),
            "--data_path", str(setup["data"]), "--image_root", str(setup["images"]), "--micro_batch_size", "2",
            "--num_workers", "0", "--precision", "fp32", "--log_every", "1", "--model_max_length", "256",
            "--deepspeed_config", "none", "--output_dir", str(tmp_path / "cut"), *common]
    killed = subprocess.run(argv, env={**ENV, "FGCLIP_FAULT_KILL_AT_STEP": "3"}, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert killed.returncode == -9
    proc = run_proc(setup, tmp_path / "cut", *common, "--resume", "auto")
    checkpoint = tmp_path / "cut" / "checkpoints" / "step_00000002"
    assert f"resumed from {checkpoint} (step 2)" in proc.stdout + proc.stderr
    resumed = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]  # the killed run's step 3 was dropped, not repeated
    reference = {m["step"]: m for m in full}
    for m in resumed[-2:]:
        assert m["loss"] == pytest.approx(reference[m["step"]]["loss"], rel=1e-5), m["step"]
        assert m["lr"] == pytest.approx(reference[m["step"]]["lr"], rel=1e-9)


def test_bad_records_and_truncated_answers_are_reported(setup, tmp_path):
    image = next(p.name for p in sorted(setup["images"].iterdir()))
    ask = {"from": "human", "value": "<image>\nDescribe it."}
    records = [{"id": "ok", "image": image, "conversations": [ask, {"from": "gpt", "value": "a red square"}]},
               {"id": "long", "image": image, "conversations": [ask, {"from": "gpt", "value": "red " * 400}]},
               {"id": "gone", "image": "no_such_image.png", "conversations": [ask, {"from": "gpt", "value": "x"}]}]
    data = tmp_path / "llava.json"
    data.write_text(json.dumps(records))
    proc = run_proc({**setup, "data": data}, tmp_path / "out", "--stage", "align", "--max_steps", "2",
                    "--micro_batch_size", "1", "--group_by_modality_length", "false", "--zero_stage", "2")
    console = proc.stdout + proc.stderr
    assert "2 samples on 1 rank(s)" in console and "train-lmm align finished: step 2" in console
    assert "bad records skipped: 1" in console and "missing_image: 1" in console
    assert f"{data} record 2, field 'image'" in console
    assert "texts truncated: 1" in console and "conversations: 1" in console
    report = json.loads((tmp_path / "out" / "bad_records.json").read_text())
    assert report["skipped"] == {"missing_image": 1} and report["truncated"] == {"conversations": 1}
    assert report["counted_on"] == "the only rank"
