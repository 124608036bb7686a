"""Every shipped YAML preset parses into its typed config (paths pointed at existing files)."""
from pathlib import Path

import pytest

from fgclip_lmm.train.clip_config import ClipTrainConfig
from fgclip_lmm.train.clip_trainer import PRESETS as CLIP_PRESETS
from fgclip_lmm.train.config_io import load_config
from fgclip_lmm.train.lmm_config import LmmTrainConfig
from fgclip_lmm.train.lmm_trainer import PRESETS as LMM_PRESETS


@pytest.mark.parametrize("preset", sorted(p.stem for p in CLIP_PRESETS.glob("*.yaml")))
def test_clip_presets(preset, tmp_path):
    (tmp_path / "d.json").write_text("[]")
    cfg = load_config(ClipTrainConfig, ["--config", preset, "--data_path", str(tmp_path / "d.json"),
                                        "--eval_data", ""], CLIP_PRESETS)
    assert cfg.stage in ("stage1", "stage2") and cfg.micro_batch_size > 0
    if cfg.deepspeed_config:
        assert Path(cfg.deepspeed_config).is_file()


@pytest.mark.parametrize("preset", sorted(p.stem for p in LMM_PRESETS.glob("*.yaml")))
def test_lmm_presets(preset, tmp_path):
    (tmp_path / "d.json").write_text("[]")
    cfg = load_config(LmmTrainConfig, ["--config", preset, "--data_path", str(tmp_path / "d.json"),
                                       "--model", str(tmp_path)], LMM_PRESETS)
    assert cfg.stage in ("align", "finetune")
    if cfg.deepspeed_config:
        assert Path(cfg.deepspeed_config).is_file()
