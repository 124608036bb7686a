"""Plugin arguments from lmms-eval (`--model_args` vs its `--batch_size` / `--device` flags) and what eval-lmm says
about its tasks: the world they come from and the lmms-eval command that runs the same evaluation."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from lmms_eval.models import get_model

from fgclip_lmm.eval.lmm.cli import DEFAULT_BATCH_SIZE, main, parse_args
from fgclip_lmm.eval.lmm.model import FGClipLlava
from fgclip_lmm.eval.lmm.provenance import (
    WORLD_FILE,
    lmms_eval_commands,
    world_line,
    world_record,
)
from fgclip_lmm.eval.lmm.tasks_dir import HUB_DIR, SYNTHETIC_DIR


@pytest.fixture()
def tiny_export(tiny_llava_export: Path) -> Path:
    return tiny_llava_export  # the session's tiny LLaVA export (read-only: eval-lmm writes under tmp_path)


def test_model_args_batch_size_wins_over_lmms_eval_flag(tiny_export: Path) -> None:
    cls = get_model("fgclip_llava")  # the entry point lmms-eval resolves
    flags = {"batch_size": 1, "max_batch_size": None, "device": None}  # lmms-eval's defaults, always passed
    lm = cls.create_from_arg_string(f"pretrained={tiny_export},batch_size=8,device=cpu", flags)
    assert lm.batch_size == 8
    lm = cls.create_from_arg_string(f"pretrained={tiny_export}", {**flags, "batch_size": "4", "device": "cpu"})
    assert lm.batch_size == 4 and str(lm.device) == "cpu"


@pytest.mark.parametrize("value", ["auto", "0", "-2"])
def test_bad_batch_size_fails_before_loading(value: str) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        FGClipLlava.create_from_arg_string("pretrained=/no/such/export", {"batch_size": value})


def test_default_batch_size_is_not_one() -> None:
    args = parse_args(["--model", "m", "--tasks", "fgclip_pope", "--out", "o"])
    assert args.batch_size == DEFAULT_BATCH_SIZE > 1


def test_packaged_tasks_name_their_world() -> None:
    line = world_line(SYNTHETIC_DIR, packaged=True)
    assert "fgclip-lmm synth --images 200 --seed 0 --size 64" in line and "--world DIR" in line
    assert json.loads((SYNTHETIC_DIR / WORLD_FILE).read_text())["num_images"] == 200


def test_built_tasks_name_their_world(tmp_path: Path) -> None:
    manifest = {"seed": 3, "num_images": 40, "image_size": 32}
    (tmp_path / WORLD_FILE).write_text(json.dumps(world_record(tmp_path / "w", manifest, None, None)))
    line = world_line(tmp_path, packaged=False)
    assert str((tmp_path / "w").resolve()) in line and "--images 40 --seed 3 --size 32" in line
    assert "not yours" not in line


def test_lmms_eval_commands_need_one_include_path_each(tmp_path: Path) -> None:
    commands = lmms_eval_commands("m", ["fgclip_pope", "fgclip_hallusion_bench_image", "mme"],
                                  [SYNTHETIC_DIR, HUB_DIR], {"dtype": "auto", "device": None}, 8, 4, 0, tmp_path)
    parsed = [shlex.split(c) for c in commands]
    include = [p[p.index("--include_path") + 1] if "--include_path" in p else None for p in parsed]
    tasks = [p[p.index("--tasks") + 1] for p in parsed]
    assert dict(zip(tasks, include, strict=True)) == {"fgclip_pope": str(SYNTHETIC_DIR),
                                         "fgclip_hallusion_bench_image": str(HUB_DIR), "mme": None}
    assert all(p[p.index("--model_args") + 1] == "pretrained=m,dtype=auto" for p in parsed)


def test_eval_lmm_header_and_report_say_where_tasks_come_from(tiny_export: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["--model", str(tiny_export), "--tasks", "fgclip_pope_random", "--out", str(out), "--limit", "2",
                 "--no-calibration", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    first = printed.splitlines()[0]
    assert first.startswith("eval-lmm: ") and "packaged world" in first and "--world DIR" in first
    header = json.loads((out / "eval_lmm.json").read_text())["header"]
    assert header["tasks_world"] in first
    (command,) = header["lmms_eval_command"]
    assert command in printed and f"--include_path {SYNTHETIC_DIR}" in command and "--limit 2" in command
    report = (out / "eval_lmm.md").read_text()
    assert "packaged world" in report and f"```bash\n{command}\n```" in report
