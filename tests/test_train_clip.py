"""train_clip on the DeepSpeed engine (subprocesses, as DeepSpeed may abort at interpreter exit)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fgclip_lmm.model import FGCLIPModel
from fgclip_lmm.train.clip_config import ClipTrainConfig
from fgclip_lmm.train.clip_trainer import PRESETS, check_finite
from fgclip_lmm.train.config_io import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def world(mini_world):
    return mini_world


def args(world, out, *extra):
    return ["--config", "stage2_b16", "--deepspeed_config", "none", "--init_from", "tiny",
            "--tokenizer", str(world["tokenizer"]), "--data_path", str(world["finehard"]),
            "--image_root", str(world["images"]), "--image_size", "32", "--tiny_width", "32",
            "--micro_batch_size", "4", "--num_workers", "0", "--warmup_steps", "2", "--lr", "1e-3",
            "--log_every", "1", "--precision", "fp32", "--output_dir", str(out), *extra]


def run(argv, env=ENV, launcher=None, timeout=240):
    cmd = launcher or [sys.executable, "-m", "fgclip_lmm.cli", "train-clip"]
    proc = subprocess.run(cmd + argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_and_resume_continue_the_same_trajectory(world, tmp_path):
    full = run(args(world, tmp_path / "full", "--max_steps", "6", "--save_every", "2"))
    assert full.returncode == 0 and "FGCLIP_TRAIN_DONE" in full.stdout, full.stderr[-3000:]
    killed = run(args(world, tmp_path / "cut", "--max_steps", "6", "--save_every", "2"),
                 env={**ENV, "FGCLIP_FAULT_KILL_AT_STEP": "5"})
    assert killed.returncode == -9
    ckpts = tmp_path / "cut" / "checkpoints"
    (ckpts / ".tmp-step_00000006").mkdir()  # half-written by a crash: ignored and cleaned
    (ckpts / "step_00000008").mkdir()  # no COMPLETE marker: ignored
    resumed = run(args(world, tmp_path / "cut", "--max_steps", "6", "--save_every", "2", "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step_00000004" in resumed.stderr + resumed.stdout
    reference = {m["step"]: m for m in metrics(tmp_path / "full")}
    after = [m for m in metrics(tmp_path / "cut")][-2:]  # steps 5 and 6 of the resumed run
    assert [m["step"] for m in after] == [5, 6]
    for m in after:
        for term in ("loss", "global_long", "global_short", "region", "hard_neg", "lr"):
            assert m[term] == pytest.approx(reference[m["step"]][term], rel=1e-6, abs=1e-7), (m["step"], term)
    assert not (ckpts / ".tmp-step_00000006").exists()
    model = FGCLIPModel.from_pretrained(tmp_path / "cut" / "hf")  # the HF export round-trips
    exported = FGCLIPModel.from_pretrained(tmp_path / "full" / "hf")
    for key, value in model.state_dict().items():
        assert torch.allclose(value, exported.state_dict()[key], atol=1e-6), key


def test_two_processes_through_the_deepspeed_launcher_zero2(world, tmp_path):
    launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port",
                str(29500 + os.getpid() % 1000), "train_clip/train.py"]
    proc = run(args(world, tmp_path / "ddp", "--max_steps", "3", "--save_every", "3", "--micro_batch_size", "2",
                    "--zero_stage", "2"), launcher=launcher)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "FGCLIP_TRAIN_DONE" in out, out[-4000:]
    sums = {line.split("rank=")[1].split()[0]: line.split()[-1] for line in out.splitlines()
            if "FGCLIP_PARAM_CHECKSUM" in line}
    assert set(sums) == {"0", "1"} and sums["0"] == sums["1"]
    assert (tmp_path / "ddp" / "hf" / "model.safetensors").is_file()


def test_zero3_one_step_and_export(world, tmp_path):
    proc = run(args(world, tmp_path / "z3", "--max_steps", "1", "--save_every", "1", "--zero_stage", "3"))
    assert proc.returncode == 0 and "FGCLIP_TRAIN_DONE" in proc.stdout, proc.stderr[-3000:]
    model = FGCLIPModel.from_pretrained(tmp_path / "z3" / "hf")
    assert model.text_model.embeddings.position_embedding_res.weight.shape[0] == model.config.long_max_len


def test_config_errors_name_the_key(world, tmp_path):
    base = args(world, tmp_path / "x")
    with pytest.raises(ConfigError, match="unknown config key.*'learning_rate'"):
        load_config(ClipTrainConfig, base + ["--learning_rate", "1"], PRESETS)
    with pytest.raises(ConfigError, match="'max_steps': expected int"):
        load_config(ClipTrainConfig, base + ["--max_steps", "many"], PRESETS)
    with pytest.raises(ConfigError, match="'data_path'.*does not exist"):
        load_config(ClipTrainConfig, base + ["--data_path", str(tmp_path / "missing.json")], PRESETS)
    with pytest.raises(ConfigError, match="known presets"):
        load_config(ClipTrainConfig, ["--config", "stage9"], PRESETS)
    cfg = load_config(ClipTrainConfig, base + ["--max_steps", "7"], PRESETS)
    assert cfg.max_steps == 7 and cfg.stage == "stage2" and cfg.lr == 1e-3


def test_non_finite_loss_names_step_and_term():
    terms = {"loss": torch.tensor(float("nan")), "global_long": torch.tensor(1.0), "hard_neg": torch.tensor(
        float("inf")), "temperature/logit_scale": torch.tensor(100.0)}
    with pytest.raises(FloatingPointError, match=r"step 12: loss term\(s\) \['loss', 'hard_neg'\]"):
        check_finite(terms, 12)


def test_freeze_patterns_and_official_parameter_groups(world, tmp_path):
    from transformers import AutoTokenizer

    from fgclip_lmm.train.clip_trainer import build_model, param_groups

    cfg = load_config(ClipTrainConfig, args(world, tmp_path / "x") + [
        "--freeze", "^vision_model\\.embeddings,text_model\\.encoder\\.layers\\.0\\.", "--text_lr", "1e-5"], PRESETS)
    model = build_model(cfg, AutoTokenizer.from_pretrained(world["tokenizer"]), resuming=False)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("vision_model.embeddings", "text_model.encoder.layers.0.")) for n in frozen)
    groups = param_groups(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        for p in group["params"]:
            name = names[id(p)]
            no_decay = "norm" in name or "layrnorm" in name or name.endswith(".bias") or name.startswith("logit_scale")
            assert group["weight_decay"] == (0.0 if no_decay else cfg.weight_decay), name
            assert group["lr"] == (1e-5 if name.startswith("text_model.") else cfg.lr), name
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    assert model.logit_scale_finegraind.item() == model.logit_scale.item()  # fresh start: official reset
