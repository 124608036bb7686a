"""The README's command blocks work as written.

* Offline blocks (marked `<!-- readme-test: offline -->`) run command by command, verbatim, in a scratch directory
  that plays the repository root, at tiny sizes: a few arguments are appended per program (`SHRINK`; later
  values win in every parser), so the world has 40 images and each trainer takes 2 steps. Commands that start
  DeepSpeed run in subprocesses (the trainers end their process), the others in this process.
* Every other block is checked without running: each `fgclip-lmm` command's arguments parse, trainer presets and
  scripts exist, `lmms-eval` model arguments are ones the plugin accepts, `make` targets exist.
"""
from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from readme_commands import README, Block, Command, read_blocks

from fgclip_lmm.cli import COMMANDS
from fgclip_lmm.cli import main as cli_main

ROOT = README.parent
BIN = Path(sys.executable).parent
SHRINK = {
    "synth": ["--images", "40", "--no-progress"],
    "train-clip": ["--max_steps", "2", "--save_every", "2", "--eval_every", "2", "--micro_batch_size", "4",
                   "--warmup_steps", "1", "--log_every", "1"],
    "train-lmm": ["--max_steps", "2", "--save_every", "2", "--micro_batch_size", "2", "--log_every", "1"],
    "tiny-llm": ["--pretrain-steps", "2", "--pretrain-batch", "4"],
    "eval-lmm": ["--limit", "4"],
    "lmms-eval": ["--limit", "4"],
}
TRAINER_SCRIPTS = {"train_clip/train.py": "train-clip", "train_lmm/train.py": "train-lmm"}


def classify(argv: list[str]) -> tuple[str, list[str]]:
    """(program, its own arguments): program is a fgclip-lmm command, `lmms-eval`, `source`, `make` or `script`."""
    if argv[0] in ("source", "make"):
        return argv[0], argv[1:]
    if argv[0] == "fgclip-lmm":
        return argv[1], argv[2:]
    for i, word in enumerate(argv):
        if word in TRAINER_SCRIPTS:
            return TRAINER_SCRIPTS[word], argv[i + 1:]
        if word == "-m" and argv[i + 1] == "fgclip_lmm.cli":
            return argv[i + 2], argv[i + 3:]
        if word == "-m" and argv[i + 1] == "lmms_eval":
            return "lmms-eval", argv[i + 2:]
    if argv[0] == "lmms-eval":
        return "lmms-eval", argv[1:]
    if argv[0].endswith(".sh"):
        return "script", argv
    raise AssertionError(f"README command of an unknown kind: {shlex_join(argv)}")


def shlex_join(argv: list[str]) -> str:
    import shlex

    return shlex.join(argv)


def blocks(offline: bool) -> list[Block]:
    return [b for b in read_blocks() if b.offline == offline and b.commands]


# ------------------------------------------------------------------------------------------------ offline blocks
def run_command(command: Command, cwd: Path) -> str:
    """Run one README command in `cwd` with the program's SHRINK arguments appended; return its output."""
    program, _ = classify(command.argv)
    if program == "source":  # the test already runs inside the virtualenv
        assert command.argv == ["source", ".venv/bin/activate"], command.text
        return ""
    argv = command.argv + SHRINK.get(program, [])
    in_process = command.argv[0] == "fgclip-lmm" and program in COMMANDS and not program.startswith("train-")
    if in_process and not command.env:
        previous = Path.cwd()
        os.chdir(cwd)
        try:
            assert cli_main(argv[1:]) == 0, command.text
        finally:
            os.chdir(previous)
        return ""
    exe = BIN / argv[0]
    env = {**os.environ, **command.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([str(exe) if exe.exists() else argv[0], *argv[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False)
    assert proc.returncode == 0, (f"README line {command.line}: "
                                  f"{command.text}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """The first offline block (the laptop walkthrough) run in a scratch repository root; outputs by program."""
    cwd = tmp_path_factory.mktemp("readme")
    for name in ("train_clip", "train_lmm"):  # launcher scripts are named relative to the repository root
        (cwd / name).symlink_to(ROOT / name)
    outputs: dict[str, str] = {}
    for command in blocks(offline=True)[0].commands:
        outputs[classify(command.argv)[0]] = run_command(command, cwd)
    return cwd, outputs


@pytest.mark.slow
def test_walkthrough_runs_and_each_step_feeds_the_next(walkthrough) -> None:
    cwd, outputs = walkthrough
    runs = cwd / "runs"
    for out in ("tiny_stage1/hf", "tiny_stage2/hf", "tiny_llm", "tiny_lmm/assembled", "tiny_lmm/align/hf",
                "tiny_lmm/finetune/hf", "tiny_lmm/lora/hf", "tiny_lmm/lora/adapter"):
        assert (runs / out / "config.json").is_file() or (runs / out / "adapter_config.json").is_file(), out
    assert "init_from: runs/tiny_stage1/hf" in (runs / "tiny_stage2" / "config.yaml").read_text()
    assert json.loads((runs / "eval-clip" / "fgovd.json").read_text())["results"]
    header = json.loads((runs / "eval-lmm" / "eval_lmm.json").read_text())["header"]
    assert str((runs / "world").resolve()) in header["tasks_world"]
    assert "--include_path" in header["lmms_eval_command"][0]
    assert list((runs / "lmms").rglob("*_results.json")), outputs.get("lmms-eval", "")[-2000:]


@pytest.mark.slow
def test_two_process_recipes_run_on_a_cpu(walkthrough) -> None:
    cwd, _ = walkthrough
    block = blocks(offline=True)[1]
    deepspeed_output = run_command(block.commands[0], cwd)
    assert "dist_world_size=2" in deepspeed_output and (cwd / "runs/tiny_stage1_2proc/hf/config.json").is_file()
    run_command(block.commands[1], cwd)
    header = json.loads((cwd / "runs/eval-lmm-2proc/eval_lmm.json").read_text())["header"]
    assert header["world_size"] == 2


# ------------------------------------------------------------------------------------------------ other blocks
def parse_only(program: str, args: list[str]) -> None:
    """Parse a command that cannot run here (GPUs, hub ids, your data) with its real parser."""
    from fgclip_lmm.presets import resolve_preset

    if program in ("train-clip", "train-lmm"):
        config = args[args.index("--config") + 1]
        resolve_preset(config, "clip" if program == "train-clip" else "lmm")
        assert all(a.startswith("--") for a in args[::2]), args
    elif program == "eval-lmm":
        from fgclip_lmm.eval.lmm.cli import parse_args

        parse_args(args)
    elif program == "lmms-eval":
        from lmms_eval.models import get_model

        from fgclip_lmm.eval.lmm.model import FGClipLlava

        assert get_model(args[args.index("--model") + 1]) is FGClipLlava
        accepted = set(inspect.signature(FGClipLlava.__init__).parameters)
        model_args = args[args.index("--model_args") + 1]
        assert {kv.split("=", 1)[0] for kv in model_args.split(",")} <= accepted, model_args
    elif program == "script":
        assert os.access(ROOT / args[0], os.X_OK), args[0]
    elif program == "make":
        makefile = (ROOT / "Makefile").read_text()
        assert all(f"\n{target}:" in makefile for target in args), args
    elif program != "source":
        module = __import__(COMMANDS[program][0], fromlist=["build_parser"])
        module.build_parser().parse_args(args)


@pytest.mark.parametrize("block", blocks(offline=False), ids=lambda b: f"line{b.line}")
def test_other_blocks_parse(block: Block) -> None:
    for command in block.commands:
        program, args = classify(command.argv)
        parse_only(program, args)


@pytest.mark.parametrize("block", blocks(offline=True)[2:], ids=lambda b: f"line{b.line}")
def test_other_offline_blocks_run(block: Block, tmp_path: Path) -> None:
    for command in block.commands:
        run_command(command, tmp_path)


def test_offline_blocks_start_with_the_walkthrough_and_two_process_recipes() -> None:
    offline = blocks(offline=True)
    assert len(offline) >= 2
    programs = [classify(c.argv)[0] for c in offline[0].commands]
    assert programs == ["source", "synth", "train-clip", "train-clip", "tiny-llm", "assemble", "train-lmm",
                        "train-lmm", "train-lmm", "eval-clip", "eval-lmm", "lmms-eval"]
    assert shutil.which("deepspeed", path=str(BIN)) and shutil.which("accelerate", path=str(BIN))
