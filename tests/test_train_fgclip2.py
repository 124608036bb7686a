"""`train-clip` with `model: fgclip2` on the DeepSpeed engine: NaFlex batches from the FineHARD reader, SIGKILL +
`--resume auto` repeating the killed step exactly (the CMR margin included), the HF export, the periodic box metric."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from transformers import AutoTokenizer

from fgclip_lmm.data.collate import CollatorConfig
from fgclip_lmm.data.collate_fgclip2 import FGClip2Collator
from fgclip_lmm.data.finehard import FineHardConfig, FineHardDataset
from fgclip_lmm.data.text import TextTooLongError
from fgclip_lmm.model import FGCLIP2Model
from fgclip_lmm.testing import write_mini_world
from fgclip_lmm.train.clip_config import ClipTrainConfig
from fgclip_lmm.train.clip_fgclip2 import use_naflex_images
from fgclip_lmm.train.config_io import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "FGCLIP_TEST_MARKERS": "1"}  # the FGCLIP_TRAIN_DONE line
TERMS = ("loss", "global_long", "global_short", "region", "region_text", "hard_neg", "hard_itc", "hard_pair",
         "hard_cmr", "cmr_threshold", "lr")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mini2")
    paths = write_mini_world(root)
    for i, size in enumerate(((40, 24), (24, 48), (33, 33))):  # mixed aspect ratios and sizes for NaFlex
        Image.open(paths["images"] / f"img_{i:03d}.png").resize(size).save(paths["images"] / f"img_{i:03d}.png")
    return paths


def args(world, out, *extra):
    return ["--config", "tiny_stage2_fgclip2", "--deepspeed_config", "none", "--tokenizer", str(world["tokenizer"]),
            "--data_path", str(world["finehard"]), "--image_root", str(world["images"]), "--image_size", "32",
            "--tiny_width", "32", "--patch_budgets", "8,16", "--micro_batch_size", "4", "--num_workers", "0",
            "--warmup_steps", "2", "--log_every", "1", "--eval_data", "", "--output_dir", str(out), *extra]


def run(argv, env=ENV, timeout=300):
    return subprocess.run([sys.executable, "-m", "fgclip_lmm.cli", "train-clip", *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"step"' in line]


def test_naflex_collator_batches_mixed_sizes_and_fixed_text_widths(world):
    tokenizer = AutoTokenizer.from_pretrained(world["tokenizer"])
    dataset = FineHardDataset(FineHardConfig(data_path=str(world["finehard"]), image_root=str(world["images"])))
    use_naflex_images(dataset)
    collator = FGClip2Collator(tokenizer, CollatorConfig(stage=2, long_max_length=196, short_max_length=64),
                               patch_size=8, patch_budgets=[8, 16])
    batch = collator([dataset[i] for i in range(4)])
    assert batch["pixel_values"].shape == (4, 16, 192) and batch["long_input_ids"].shape == (4, 196)
    assert batch["short_input_ids"].shape == (4, 64) and batch["box_input_ids"].shape[1] == 64
    shapes = batch["spatial_shapes"].tolist()
    assert shapes[0] == [3, 5] and shapes[1] == [5, 3]  # 40x24 and 24x48 keep their aspect ratio within 16 patches
    assert batch["pixel_attention_mask"].sum(1).tolist() == [h * w for h, w in shapes]
    assert (batch["short_input_ids"][:, -1] == tokenizer.pad_token_id).all()
    small = collator([dataset[2]])  # a 33x33 image alone: 16 native patches -> the 16-patch budget
    assert small["pixel_values"].shape[1] == 16 and small["spatial_shapes"].tolist() == [[4, 4]]
    strict = FGClip2Collator(tokenizer, CollatorConfig(stage=1, long_max_length=196, short_max_length=4,
                                                       truncation="error"), patch_size=8, patch_budgets=[16])
    with pytest.raises(TextTooLongError, match="record 0, field 'short_caption'.*exceed max_length 4"):
        strict([dataset[0]])


def test_sigkill_and_resume_continue_the_same_trajectory(world, tmp_path):
    steps = ["--max_steps", "5", "--save_every", "3"]
    killed = run(args(world, tmp_path / "cut", *steps), env={**ENV, "FGCLIP_FAULT_KILL_AT_STEP": "4"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    before = {m["step"]: m for m in metrics(tmp_path / "cut")}
    assert sorted(before) == [1, 2, 3, 4]
    # the step-3 checkpoint holds a nonzero CMR margin, which step 4's hard_cmr uses: a resume that lost it differs
    assert before[3]["cmr_threshold"] > 0 and before[4]["hard_cmr"] > 0
    resumed = run(args(world, tmp_path / "cut", *steps, "--resume", "auto"))
    assert resumed.returncode == 0 and "FGCLIP_TRAIN_DONE" in resumed.stdout, resumed.stderr[-3000:]
    assert "step_00000003" in resumed.stderr + resumed.stdout
    rows = metrics(tmp_path / "cut")
    assert [m["step"] for m in rows] == [1, 2, 3, 4, 5]  # the killed run's step 4 row was dropped on resume
    after = rows[3:]
    for term in TERMS:  # step 4 again, from the step-3 checkpoint: the same numbers as the first time
        assert after[0][term] == pytest.approx(before[4][term], rel=1e-6, abs=1e-7), term
    model = FGCLIP2Model.from_pretrained(tmp_path / "cut" / "hf")
    assert model.criterion.cmr_threshold.item() == pytest.approx(after[1]["cmr_threshold"], abs=1e-7)


def test_config_errors_and_presets(world, tmp_path):
    with pytest.raises(ConfigError, match="'model': 'fgclip3' is not one of fgclip\\|fgclip2"):
        load_config(ClipTrainConfig, args(world, tmp_path) + ["--model", "fgclip3"], "clip")
    with pytest.raises(ConfigError, match="'logit_scale_max': FG-CLIP 2 trains its temperatures unclamped"):
        load_config(ClipTrainConfig, args(world, tmp_path) + ["--logit_scale_max", "4.6"], "clip")
    cfg = load_config(ClipTrainConfig, ["--config", "stage2_fgclip2_b16", "--data_path", str(world["finehard"])],
                      "clip")
    assert (cfg.model, cfg.lr, cfg.micro_batch_size, cfg.betas, cfg.eps, cfg.epochs) == (
        "fgclip2", 1e-6, 512, [0.9, 0.98], 1e-6, 6)
    assert cfg.patch_budgets == [128, 256, 576, 784, 1024] and cfg.precision == "auto" and cfg.zero_stage == 2


def test_periodic_box_metric_on_naflex_inputs(world, tmp_path):
    from fgclip_lmm.train.clip_fgclip2 import build_fgclip2_model, fgclip2_hard_negative_accuracy

    cfg = load_config(ClipTrainConfig, args(world, tmp_path) + ["--eval_data", str(world["finehard"]),
                                                                "--eval_image_root", str(world["images"])], "clip")
    tokenizer = AutoTokenizer.from_pretrained(world["tokenizer"])
    model = build_fgclip2_model(cfg, tokenizer, resuming=False).eval()
    result = fgclip2_hard_negative_accuracy(model, tokenizer, cfg, batch_size=4)
    assert 0.0 <= result["hard_neg_acc"] <= 1.0 and result["chance"] == pytest.approx(1 / 11)
    assert result["hard_neg_boxes"] == sum(1 for r in json.loads(world["finehard"].read_text())
                                           for j, _ in enumerate(r["bbox_info"]) if j % 2 == 0)
