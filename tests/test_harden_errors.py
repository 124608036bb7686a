"""One-line errors: every command turns a bad record, a bad checkpoint (truncated, unsafe pickle, hub id while
offline) or a bad value into one line naming the file / record / field, exit status 2; `--debug` or
FGCLIP_DEBUG=1 adds the traceback. The command lines run through the real dispatcher in one subprocess."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from harden_cli import run_cli, run_cli_batch

from fgclip_lmm.errors import CheckpointError, InputError, checkpoint_errors, format_error


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, mini_world, tiny_llava_export) -> dict[str, Path]:
    from fgclip_lmm.model import FGCLIPModel
    from fgclip_lmm.model.configuration_fgclip import FGCLIPConfig

    root = tmp_path_factory.mktemp("errors")
    world = mini_world
    FGCLIPModel(FGCLIPConfig.tiny()).save_pretrained(root / "clip")
    shutil.copytree(root / "clip", root / "clip_trunc")
    _truncate(root / "clip_trunc" / "model.safetensors")
    (root / "clip_pickle").mkdir()
    shutil.copy(root / "clip" / "config.json", root / "clip_pickle" / "config.json")
    torch.save({"weights": _Evil()}, root / "clip_pickle" / "pytorch_model.bin")
    llava = tiny_llava_export
    shutil.copytree(llava, root / "llava_trunc")
    _truncate(root / "llava_trunc" / "model.safetensors")
    (root / "adapter").mkdir()
    (root / "adapter" / "adapter_config.json").write_text("{}")
    records = json.loads(world["finehard"].read_text())
    del records[3]["caption"]
    (root / "bad_finehard.json").write_text(json.dumps(records))
    (root / "retrieval.json").write_text(json.dumps([
        {"image": f"img_{i:03d}.png", "conversations": [{"from": "human", "value": "Describe."},
                                                        {"from": "gpt", "value": f"picture {i}"}]} for i in range(4)]))
    return {"root": root, "images": world["images"], "tokenizer": world["tokenizer"], "llava": llava}


def test_every_command_reports_bad_input_in_one_line(inputs) -> None:
    r = inputs["root"]
    trainer = ["--config", "stage2_b16", "--deepspeed_config", "none", "--init_from", "tiny", "--tokenizer",
               inputs["tokenizer"], "--image_root", inputs["images"], "--image_size", "32", "--tiny_width", "32",
               "--micro_batch_size", "4", "--num_workers", "0", "--output_dir", r / "train_out"]
    cases = {
        "convert truncated": (["convert", r / "clip_trunc", r / "out1"], {}),
        "convert pickle": (["convert", r / "clip_pickle", r / "out2"], {}),
        "convert offline hub id": (["convert", "someone/some-model", r / "out3"], {}),
        "convert --debug": (["--debug", "convert", r / "clip_trunc", r / "out4"], {}),
        "convert FGCLIP_DEBUG": (["convert", r / "clip_trunc", r / "out5"], {"FGCLIP_DEBUG": "1"}),
        "eval-clip bad value": (["eval-clip", "--model", r / "clip", "--bench", "retrieval", "--data",
                                 r / "retrieval.json", "--batch-size", "-3"], {}),
        "eval-clip truncated": (["eval-clip", "--model", r / "clip_trunc", "--bench", "retrieval", "--data",
                                 r / "retrieval.json", "--image-root", inputs["images"], "--tokenizer",
                                 inputs["tokenizer"], "--out", r / "ec", "--no-progress"], {}),
        "eval-lmm truncated": (["eval-lmm", "--model", r / "llava_trunc", "--tasks", "fgclip_pope_random",
                                "--out", r / "el", "--limit", "2"], {}),
        "assemble truncated tower": (["assemble", "--tower", f"fgclip:{r / 'clip_trunc'}", "--llm", "x/y",
                                      "--out", r / "as1"], {}),
        "assemble offline llm": (["assemble", "--tower", f"fgclip:{r / 'clip'}", "--llm", "someone/llm",
                                  "--out", r / "as2"], {}),
        "merge-lora truncated base": (["merge-lora", "--base", r / "llava_trunc", "--adapter", r / "adapter",
                                       "--out", r / "ml"], {}),
        "datagen bad value": (["datagen", "negatives", "--input", r / "bad_finehard.json", "--out", r / "dg.json",
                               "--rules-only", "--batch-size", "0", "--no-progress"], {}),
        "train-clip bad record": (["train-clip", *trainer, "--data_path", r / "bad_finehard.json",
                                   "--on_bad_record", "error"], {}),
        "train-clip truncated init": (["train-clip", *trainer, "--data_path", r / "bad_finehard.json",
                                       "--init_from", r / "clip_trunc"], {}),
        "train-lmm truncated model": (["train-lmm", "--config", "tiny_finetune", "--model", r / "llava_trunc",
                                       "--data_path", r / "bad_finehard.json", "--output_dir", r / "tl"], {}),
    }
    # A trainer that failed after its process group exists leaves with os._exit (see train/command.py), which
    # would end a shared driver: each trainer case runs in its own process, the rest share one.
    shared = [name for name in cases if not name.startswith("train-")]
    results = dict(zip(shared, run_cli_batch([cases[name] for name in shared]), strict=True))
    for name in cases:
        if name not in results:
            argv, env = cases[name]
            results[name] = run_cli(*map(str, argv), env=env)
    results = {name: results[name] for name in cases}
    for name, result in results.items():
        assert result.code == 2, f"{name}: exit {result.code}\n{result.err[-2000:]}"
        assert len(result.error_lines) == 1, f"{name}: {result.err[-2000:]}"
        assert "weights_only" not in result.err, name
        if "debug" not in name.lower():
            assert "Traceback" not in result.err, f"{name}: {result.err[-2000:]}"
    line = {name: result.error_lines[0] for name, result in results.items()}
    truncated_clip = f"{r / 'clip_trunc' / 'model.safetensors'}: not a valid safetensors file (truncated"
    for name in ("convert truncated", "eval-clip truncated", "assemble truncated tower", "train-clip truncated init"):
        assert truncated_clip in line[name], line[name]
    truncated_llava = f"{r / 'llava_trunc' / 'model.safetensors'}: not a valid safetensors file (truncated"
    for name in ("eval-lmm truncated", "merge-lora truncated base", "train-lmm truncated model"):
        assert truncated_llava in line[name], line[name]
    assert line["convert pickle"].startswith(f"fgclip-lmm convert: error: {r / 'clip_pickle' / 'pytorch_model.bin'}: "
                                             "refused to load a pickle checkpoint")
    assert "posix.system" in line["convert pickle"] and "should-never-run" not in results["convert pickle"].out
    for name, hub_id in (("convert offline hub id", "someone/some-model"), ("assemble offline llm", "someone/llm")):
        offline = f"{hub_id}: not a local directory, and not in the Hugging Face cache while the hub is offline"
        assert offline in line[name]
    assert "--batch-size and --text-batch-size must be >= 1" in line["eval-clip bad value"]
    assert "batch_size must be >= 1, got 0" in line["datagen bad value"]
    assert line["train-clip bad record"] == (f"fgclip-lmm train-clip: error: {r / 'bad_finehard.json'} record 3, "
                                             "field 'caption': field is missing [missing_field]")
    for name in ("convert --debug", "convert FGCLIP_DEBUG"):
        err = results[name].err
        assert "Traceback (most recent call last)" in err and "SafetensorError" in err
        assert line[name] == line["convert truncated"].replace("out1", "out4")


def test_only_expected_errors_become_one_line(tmp_path) -> None:
    assert format_error(InputError("--limit must be >= 1\n(second line)")) == "--limit must be >= 1 (second line)"
    missing = FileNotFoundError(2, "No such file or directory", "/x/y.json")
    assert format_error(missing) == "/x/y.json: No such file or directory"
    assert format_error(RuntimeError("a bug")) is None  # bugs keep their traceback
    assert format_error(KeyError("k")) is None
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    from safetensors.torch import load_file

    with pytest.raises(CheckpointError, match=f"{weights}: not a valid safetensors file"):
        with checkpoint_errors(tmp_path):
            load_file(weights)
    with pytest.raises(ZeroDivisionError):  # anything that is not a checkpoint failure passes through unchanged
        with checkpoint_errors(tmp_path):
            _ = 1 / 0
