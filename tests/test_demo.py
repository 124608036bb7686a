"""`fgclip-lmm demo --tiny` end to end: every report section present, every number re-read from the run."""
import json
import os
import subprocess
import sys
from pathlib import Path

from fgclip_lmm.demo.numbers import verify_numbers
from fgclip_lmm.demo.report import SECTIONS

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_demo_report(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-m", "fgclip_lmm.cli", "demo", "--tiny", "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = (out / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in report, section
    for png in ("loss_curves", "fgovd_test", "fgovd_heldout", "boxcls_retrieval", "pope", "attributes", "visual_gain",
                "heatmaps"):
        assert (out / f"{png}.png").stat().st_size > 1000, png
    assert "<table>" in (out / "report.html").read_text()
    numbers = json.loads((out / "report.json").read_text())["numbers"]
    assert len(numbers) > 60 and verify_numbers(out / "report.json") == []
    # the LMM verdicts come from the blind controls and the paired comparison of this run
    sources = {n["file"] for n in numbers}
    assert {"lmm_eval/compare/compare.json", "lmm_eval/fgclip/eval_lmm.json", "lmm_eval/clip/eval_lmm.json"} <= sources
    assert sum(n["keys"][-1] == "visual_gain" for n in numbers) == 2 * 9  # 2 towers x (3 POPE splits + 6 pairs)
    assert "Wins for" in report and "visual gain" in report
    assert (out / "world" / "llava" / "text.json").is_file() and (out / "lmm" / "llm" / "text_pretrain.json").is_file()
    # tampering with a source file is detected
    stages = json.loads((out / "stages.json").read_text())
    stages["world"]["seconds"] += 1
    (out / "stages.json").write_text(json.dumps(stages))
    assert verify_numbers(out / "report.json")
    # a rerun verifies the completed stages and skips them
    rerun = subprocess.run([sys.executable, "-m", "fgclip_lmm.cli", "demo", "--tiny", "--out", str(out)], cwd=ROOT,
                           env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0 and (rerun.stdout + rerun.stderr).count("outputs verified - skipped") == len(stages)
