"""The `fgclip-lmm` dispatcher: `--help` and argument errors of the non-trainer commands import no heavy library
(timings are in benchmarks/bench_cli_startup.py), and `tiny-llm` writes a random Llama over a tokenizer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from fgclip_lmm.cli import COMMANDS
from fgclip_lmm.cli import main as cli_main

TRAINERS = {"train-clip", "train-lmm"}
HEAVY = ("torch", "transformers", "deepspeed", "lmms_eval", "accelerate", "peft")
# Each case runs in one fresh interpreter after the previous ones; argparse exits through SystemExit.
PROBE = r"""
import contextlib, io, json, sys
sys.argv[0] = "fgclip-lmm"  # as the console script: `import fgclip_lmm` then skips the Auto registration
from fgclip_lmm.cli import main
report = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    heavy = sorted(m for m in HEAVY if m in sys.modules)
    report.append({"argv": argv, "code": code, "out": out.getvalue() + err.getvalue(), "heavy": heavy})
print(json.dumps(report))
""".replace("HEAVY", repr(HEAVY))

ARG_ERRORS = [
    ["synth", "--out", "x", "--images", "many"],
    ["assemble", "--tower", "fgclip:x", "--out", "y"],
    ["merge-lora", "--base", "b", "--adapter", "a", "--out", "o", "--dtype", "int3"],
    ["eval-clip", "--model", "m", "--bench", "nope", "--data", "d"],
    ["eval-lmm", "--model", "m", "--tasks", "fgclip_pope", "--out", "o", "--batch-size", "0"],
    ["eval-lmm", "--model", "/no/such/checkpoint", "--tasks", "fgclip_pope", "--out", "o"],
    ["tiny-llm", "--tokenizer", "/no/such/tokenizer", "--out", "o"],
    ["datagen", "negatives", "--input", "x.json", "--out", "y.json"],
    ["demo", "--images", "many"],
    ["convert"],
    ["no-such-command"],
]


def test_help_and_argument_errors_import_no_heavy_library() -> None:
    cases = [["--help"]] + [[name, "--help"] for name in COMMANDS if name not in TRAINERS] + ARG_ERRORS
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(cases)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report) == len(cases)
    for entry in report:
        assert entry["heavy"] == [], f"{entry['argv']} imported {entry['heavy']}"
        if entry["argv"][-1] == "--help":
            assert entry["code"] in (0, None) and "usage" in entry["out"], entry
        else:
            assert entry["code"] == 2 and ("error" in entry["out"] or "unknown command" in entry["out"]), entry
    assert "tiny-llm" in report[0]["out"]


@pytest.fixture()
def tokenizer_dir(tiny_llama: Path) -> Path:
    return tiny_llama  # the session's tiny Llama directory holds its Llama-style tokenizer


def test_tiny_llm_is_a_random_llama_over_the_tokenizer(tokenizer_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "llm"
    assert cli_main(["tiny-llm", "--tokenizer", str(tokenizer_dir), "--out", str(out), "--hidden", "32",
                     "--layers", "1", "--seed", "3"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    tokenizer, model = AutoTokenizer.from_pretrained(tokenizer_dir), AutoModelForCausalLM.from_pretrained(out)
    config = model.config
    assert config.model_type == "llama" and (config.hidden_size, config.num_hidden_layers) == (32, 1)
    assert config.vocab_size == len(tokenizer) and config.eos_token_id == tokenizer.eos_token_id
    assert AutoTokenizer.from_pretrained(out).get_vocab() == tokenizer.get_vocab()
    again = tmp_path / "again"
    cli_main(["tiny-llm", "--tokenizer", str(tokenizer_dir), "--out", str(again), "--hidden", "32", "--layers", "1",
              "--seed", "3"])
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_tiny_llm_rejects_a_width_llama_cannot_split(tokenizer_dir: Path, tmp_path: Path, capsys) -> None:
    assert cli_main(["tiny-llm", "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "x"),
                     "--hidden", "80"]) == 2
    assert "--hidden 80" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
