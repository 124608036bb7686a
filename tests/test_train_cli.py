"""The trainers' command line before any model exists: --help, one-line config errors (exit 2), --debug, the
output dir checks and its lock. These run the real `fgclip-lmm` console script and never import torch."""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fgclip_lmm.train.clip_config import ClipTrainConfig
from fgclip_lmm.train.lmm_config import LmmTrainConfig
from fgclip_lmm.train.rundir import LOCK_NAME, RunDirError, RunLock

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "fgclip-lmm"
ENV = {k: v for k, v in os.environ.items() if k != "FGCLIP_DEBUG"}


def cli(*argv, env=None):
    return subprocess.run([str(SCRIPT), *argv], env={**ENV, **(env or {})}, cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize(("command", "cls", "preset", "preset_value"), [
    ("train-clip", ClipTrainConfig, "tiny_stage1", "[default 'runs/world/stage1/train.jsonl']"),
    ("train-lmm", LmmTrainConfig, "tiny_align", "[default 'runs/tiny_lmm/assembled']")])
def test_help_describes_every_key_with_default_and_no_absolute_path(command, cls, preset, preset_value):
    proc = cli(command, "--config", preset, "--help")
    assert proc.returncode == 0, proc.stderr
    lines = {line.split()[0]: line for line in proc.stdout.splitlines() if line.startswith("  --")}
    for f in cls.__dataclass_fields__.values():
        line = lines[f"--{f.name}"]
        assert f.metadata["help"] in line and "[default " in line, line
    assert f"defaults from preset {preset!r}" in proc.stdout
    assert preset_value in proc.stdout  # the preset's values, not the built-in defaults
    assert str(ROOT) not in proc.stdout and not re.search(r"(^|[\s'\"(\[])/\w", proc.stdout), proc.stdout


def test_invalid_value_is_one_line_naming_the_key_and_debug_shows_the_traceback():
    proc = cli("train-lmm", "--micro_batch_size", "-3")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "fgclip-lmm train-lmm: error: config key 'micro_batch_size': must be >= 1, got -3\n"
    for debug in (["--debug"], []):
        traced = cli("train-lmm", "--micro_batch_size", "-3", *debug, env={} if debug else {"FGCLIP_DEBUG": "1"})
        assert traced.returncode == 2 and "Traceback (most recent call last)" in traced.stderr
        assert "ConfigError" in traced.stderr
        assert traced.stderr.rstrip().splitlines()[-1] == proc.stderr.strip()


def test_config_errors_exit_2_in_one_line(tmp_path):
    data = tmp_path / "d.json"
    data.write_text("[]")
    cases = {("--config", "stage9"): "known presets: ['stage1_b16'",
             ("--config", "tiny_stage1", "--learning_rate", "1"): "unknown config key(s) ['learning_rate']",
             ("--config", "tiny_stage1", "--stage", "stage3"):
                 "config key 'stage': 'stage3' is not one of stage1|stage2",
             ("--config", "tiny_stage1", "--precision", "fp16"): "config key 'precision': 'fp16' is not one of",
             ("--config", "tiny_stage1", "--data_path", str(tmp_path / "no.json")): "'data_path': ",
             ("--data_path", str(data), "--output_dir", str(tmp_path / "o"), "--resume", str(tmp_path)):
                 "config key 'resume'"}
    for argv, message in cases.items():
        proc = cli("train-clip", *argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and message in proc.stderr, (argv, proc.stderr)


def test_output_dir_must_be_writable(tmp_path):
    data = tmp_path / "d.json"
    data.write_text("[]")
    (tmp_path / "file").write_text("not a directory")
    proc = cli("train-clip", "--data_path", str(data), "--output_dir", str(tmp_path / "file" / "run"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("fgclip-lmm train-clip: error: config key 'output_dir': cannot write to ")
    assert len(proc.stderr.splitlines()) == 1


def test_a_live_run_holds_the_output_dir_and_its_staging_dirs_survive(tmp_path):
    data, out = tmp_path / "d.json", tmp_path / "run"
    data.write_text("[]")
    staging = out / "checkpoints" / ".tmp-step_00000002"
    staging.mkdir(parents=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "x"}))
    proc = cli("train-lmm", "--data_path", str(data), "--model", str(tmp_path), "--output_dir", str(out))
    assert proc.returncode == 2
    assert f"is in use by a live run (pid {os.getpid()}" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert staging.is_dir() and json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_run_lock_takes_over_a_stale_lock_and_refuses_a_foreign_host(tmp_path):
    lock = RunLock(tmp_path)
    assert lock.acquire() is None and json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    gone = dead_pid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": gone, "host": socket.gethostname(), "started": "x"}))
    note = RunLock(tmp_path).acquire()
    assert note == f"output_dir {tmp_path}: took over the stale lock of pid {gone} (no longer running)"
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(RunDirError, match=f"locked by pid 1 on host elsewhere.*remove {tmp_path / LOCK_NAME}"):
        RunLock(tmp_path).acquire()
