"""train_clip on the DeepSpeed engine (subprocesses, as DeepSpeed may abort at interpreter exit)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fgclip_lmm.model import FGCLIPModel
from fgclip_lmm.train.clip_config import ClipTrainConfig
from fgclip_lmm.train.clip_trainer import PRESETS
from fgclip_lmm.train.config_io import ConfigError, load_config
from fgclip_lmm.train.loop import check_finite

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "FGCLIP_TEST_MARKERS": "1"}  # FGCLIP_TRAIN_DONE / FGCLIP_PARAM_CHECKSUM lines


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
    return subprocess.run(cmd + argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_and_resume_continue_the_same_trajectory(world, tmp_path):
    common = ("--max_steps", "6", "--save_every", "2", "--eval_data", str(world["finehard"]),
              "--eval_image_root", str(world["images"]), "--eval_every", "3")
    full = run(args(world, tmp_path / "full", *common))
    assert full.returncode == 0 and "FGCLIP_TRAIN_DONE" in full.stdout, full.stderr[-3000:]
    console = full.stdout + full.stderr
    assert "step 3 eval: hard_neg_acc " in console and "step 6 eval: hard_neg_acc " in console
    assert "Writing model shards" not in console and "Loading weights" not in console  # HF bars silenced
    summary = full.stdout[full.stdout.index("train-clip stage2 finished: step 6"):]
    assert "final loss " in summary and "hard_neg " in summary and "best eval/hard_neg_acc: " in summary
    assert f"model:   {tmp_path / 'full' / 'hf'}" in summary and str(tmp_path / "full" / "metrics.jsonl") in summary
    killed = run(args(world, tmp_path / "cut", *common), env={**ENV, "FGCLIP_FAULT_KILL_AT_STEP": "5"})
    assert killed.returncode == -9
    ckpts = tmp_path / "cut" / "checkpoints"
    (ckpts / ".tmp-step_00000006").mkdir()  # half-written by a crash: ignored and cleaned
    (ckpts / "step_00000008").mkdir()  # no COMPLETE marker: ignored
    killed_pid = json.loads((tmp_path / "cut" / "run.lock").read_text())["pid"]  # left behind by the SIGKILL
    resumed = run(args(world, tmp_path / "cut", *common, "--resume", "auto"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    console = resumed.stderr + resumed.stdout
    assert f"took over the stale lock of pid {killed_pid}" in console  # the SIGKILLed run's lock
    assert f"resumed from {ckpts / 'step_00000004'} (step 4)" in console
    assert "dropped 1 row(s) past step 4" in console  # step 5 of the killed run
    reference = {m["step"]: m for m in metrics(tmp_path / "full")}
    rows = metrics(tmp_path / "cut")
    assert [m["step"] for m in rows] == [1, 2, 3, 4, 5, 6]  # no step twice after the resume
    for m in rows[-2:]:  # steps 5 and 6 of the resumed run
        for term in ("loss", "global_long", "global_short", "region", "hard_neg", "lr"):
            assert m[term] == pytest.approx(reference[m["step"]][term], rel=1e-6, abs=1e-7), (m["step"], term)
    assert rows[-1]["eval/hard_neg_acc"] == pytest.approx(reference[6]["eval/hard_neg_acc"])
    assert not (ckpts / ".tmp-step_00000006").exists() and not (tmp_path / "cut" / "run.lock").exists()
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
    quiet = {k: v for k, v in ENV.items() if k != "FGCLIP_TEST_MARKERS"}
    proc = run(args(world, tmp_path / "z3", "--max_steps", "1", "--save_every", "1", "--zero_stage", "3"), env=quiet)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "FGCLIP_" not in proc.stdout + proc.stderr  # test markers only under FGCLIP_TEST_MARKERS
    assert "train-clip stage2 finished: step 1" in proc.stdout
    model = FGCLIPModel.from_pretrained(tmp_path / "z3" / "hf")
    assert model.text_model.embeddings.position_embedding_res.weight.shape[0] == model.config.long_max_len


def test_every_record_bad_under_skip_prints_and_writes_the_report_then_one_line(world, tmp_path):
    records = json.loads(world["finehard"].read_text())[:3]
    for i, record in enumerate(records):
        record["f_path"] = f"missing_{i}.png"
    data = tmp_path / "bad.json"
    data.write_text(json.dumps(records))
    proc = run(args(world, tmp_path / "out", "--data_path", str(data), "--on_bad_record", "skip"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"fgclip-lmm train-clip: error: data_path {data}: ")
    assert "no valid records left" in errors[0]
    report_at = proc.stderr.index("bad records skipped: 3")
    assert report_at < proc.stderr.index("fgclip-lmm train-clip: error:")
    assert proc.stderr.index("missing_image: 3") > report_at and f"{data} record 0, field 'f_path'" in proc.stderr
    report = json.loads((tmp_path / "out" / "bad_records.json").read_text())
    assert report["skipped"] == {"missing_image": 3} and report["total_skipped"] == 3
    assert report["total_truncated"] == 0 and len(report["examples"]["missing_image"]) == 3
    assert not (tmp_path / "out" / "run.lock").exists()


def test_bad_record_met_in_a_dataloader_worker_is_one_line_under_error(world, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for image in world["images"].iterdir():
        (images / image.name).write_bytes(b"not an image")
    proc = run(args(world, tmp_path / "out", "--image_root", str(images), "--on_bad_record", "error",
                    "--num_workers", "1", "--max_steps", "1"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"fgclip-lmm train-clip: error: {re.escape(str(world['finehard']))} record \d+, field "
                        rf"'f_path': "
                        r"cannot decode .*\[corrupt_image\]", last), last


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

    from fgclip_lmm.train.clip_task import build_model, param_groups

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
