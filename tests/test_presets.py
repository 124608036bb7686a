"""Every shipped YAML preset parses into its typed config (paths pointed at existing files)."""

import pytest

from fgclip_lmm.presets import preset_names, resolve_deepspeed_json
from fgclip_lmm.train.clip_config import ClipTrainConfig
from fgclip_lmm.train.config_io import load_config
from fgclip_lmm.train.lmm_config import LmmTrainConfig


@pytest.mark.parametrize("preset", preset_names("clip"))
def test_clip_presets(preset, tmp_path):
    (tmp_path / "d.json").write_text("[]")
    cfg = load_config(ClipTrainConfig, ["--config", preset, "--data_path", str(tmp_path / "d.json"),
                                        "--eval_data", ""], "clip")
    assert cfg.stage in ("stage1", "stage2") and cfg.micro_batch_size > 0
    if cfg.deepspeed_config:
        assert resolve_deepspeed_json(cfg.deepspeed_config).is_file()


@pytest.mark.parametrize("preset", preset_names("lmm"))
def test_lmm_presets(preset, tmp_path):
    (tmp_path / "d.json").write_text("[]")
    cfg = load_config(LmmTrainConfig, ["--config", preset, "--data_path", str(tmp_path / "d.json"),
                                       "--model", str(tmp_path)], "lmm")
    assert cfg.stage in ("align", "finetune")
    if cfg.deepspeed_config:
        assert resolve_deepspeed_json(cfg.deepspeed_config).is_file()
