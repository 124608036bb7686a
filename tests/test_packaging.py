"""The package as users install it: a built wheel used from another directory, and Auto registration on import.

The wheel is built from a copy of the tree (so the checkout gets no `build/` or `*.egg-info`), installed with
`pip install --target` into a temporary directory, and used with only that directory on `PYTHONPATH` from a working
directory outside the checkout, so nothing can come from the source tree.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fgclip_lmm.model import FGCLIPConfig, FGCLIPModel

ROOT = Path(__file__).resolve().parents[1]
PRESET_SOURCES = {"clip": ROOT / "fgclip_lmm/presets/clip", "lmm": ROOT / "fgclip_lmm/presets/lmm"}

# Run by the installed package: every shipped preset resolves by name and parses, every DeepSpeed JSON loads, the
# packaged lmms-eval tasks are there, and the package really is the installed copy.
CHECK_INSTALLED = """
import json, sys
from pathlib import Path
import fgclip_lmm
from fgclip_lmm.presets import deepspeed_names, preset_names, resolve_deepspeed_json, resolve_preset
from fgclip_lmm.eval.lmm.tasks_dir import SYNTHETIC_DIR
import yaml

site = Path(sys.argv[1]).resolve()
assert Path(fgclip_lmm.__file__).resolve().is_relative_to(site), fgclip_lmm.__file__
for kind, expected in json.loads(sys.argv[2]).items():
    assert preset_names(kind) == expected, (kind, preset_names(kind), expected)
    for name in expected:
        assert isinstance(yaml.safe_load(resolve_preset(name, kind).read_text()), dict), name
assert deepspeed_names() == ["zero2", "zero3"], deepspeed_names()
stages = {name: json.loads(resolve_deepspeed_json(name).read_text())["zero_optimization"]["stage"]
          for name in deepspeed_names()}
assert stages == {"zero2": 2, "zero3": 3}, stages
assert Path(SYNTHETIC_DIR).resolve().is_relative_to(site)
assert sorted(p.name for p in Path(SYNTHETIC_DIR).glob("*.yaml")) and list(Path(SYNTHETIC_DIR).rglob("*.parquet"))
print("INSTALLED_OK")
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel --no-deps` of a copy of the tree, installed with `--target`; returns the target directory."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "fgclip_lmm", src / "fgclip_lmm", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # No build isolation: build with the environment's setuptools instead of fetching one (offline).
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)],
                   check=True, capture_output=True, text=True, timeout=300)
    wheels = list((root / "dist").glob("fgclip_lmm-*.whl"))
    assert len(wheels) == 1, wheels
    site = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheels[0])],
                   check=True, capture_output=True, text=True, timeout=300)
    return site


def _run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_installed_wheel_resolves_presets_and_configs_from_any_directory(installed: Path, tmp_path: Path) -> None:
    expected = {kind: sorted(p.stem for p in folder.glob("*.yaml")) for kind, folder in PRESET_SOURCES.items()}
    assert all(expected.values())
    proc = _run_installed(installed, tmp_path, sys.executable, "-c", CHECK_INSTALLED, str(installed),
                          json.dumps(expected))
    assert proc.returncode == 0 and "INSTALLED_OK" in proc.stdout, proc.stderr[-3000:]


def test_installed_console_script_shows_a_preset_help(installed: Path, tmp_path: Path) -> None:
    script = installed / "bin" / "fgclip-lmm"
    assert script.is_file()
    # The script's shebang is this interpreter; run it through it so a long temp path cannot break the shebang.
    proc = _run_installed(installed, tmp_path, sys.executable, str(script), "train-clip", "--config", "tiny_stage1",
                          "--help")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--init_from" in proc.stdout and "--deepspeed_config" in proc.stdout
    assert "tiny_stage1" in proc.stdout.split("presets:")[-1]


def test_auto_model_loads_fgclip_after_a_bare_import(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = FGCLIPModel(FGCLIPConfig.tiny()).eval()
    model.save_pretrained(tmp_path / "fgclip")
    with torch.no_grad():
        expected = float(model.logit_scale_hardneg) + float(model.visual_projection.weight.sum())
    code = (
        "import sys\n"
        "import fgclip_lmm\n"
        "from transformers import AutoConfig, AutoModel\n"
        "model = AutoModel.from_pretrained(sys.argv[1])\n"
        "assert type(model).__name__ == 'FGCLIPModel'\n"
        "assert AutoConfig.from_pretrained(sys.argv[1]).model_type == 'fgclip'\n"
        "print(float(model.logit_scale_hardneg) + float(model.visual_projection.weight.sum()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "fgclip")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(expected, rel=1e-6)
