"""The plugin through the real lmms-eval CLI, offline, in 2 CPU processes (accelerate's torchrun launcher).

`--model fgclip_llava` resolves through the installed entry point; lmms-eval shards the documents by rank
(rank r gets documents r, r+2, ...), and the gathered metrics equal a single-process in-process run.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager

from fgclip_lmm.eval.lmm.model import FGClipLlava
from fgclip_lmm.eval.lmm.tasks_dir import SYNTHETIC_DIR

TASKS = ["fgclip_pope_random", "fgclip_attr_color"]
LIMIT = 10


@pytest.fixture()
def tiny_export(tiny_llava_export: Path) -> Path:
    return tiny_llava_export


def test_two_process_lmms_eval_cli_shards_like_builtin_models(tiny_export: Path, tmp_path: Path,
                                                               subprocess_env: dict) -> None:
    out = tmp_path / "lmms"
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [str(accelerate), "launch", "--num_processes", "2", "--multi_gpu", "--main_process_port", "29613",
           "-m", "lmms_eval", "--model", "fgclip_llava",
           "--model_args", f"pretrained={tiny_export},score_yes_no=true,scores_path={out / 'scores.jsonl'}",
           "--batch_size", "4", "--tasks", ",".join(TASKS), "--include_path", str(SYNTHETIC_DIR),
           "--limit", str(LIMIT), "--output_path", str(out), "--log_samples", "--verbosity", "WARNING"]
    env = {**subprocess_env, "ACCELERATE_USE_CPU": "true"}  # --cpu would start a single process
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    per_rank = {}
    for rank in (0, 1):
        rows = [json.loads(line) for line in (out / f"scores.rank{rank}.jsonl").read_text().splitlines()]
        per_rank[rank] = {(r["task"], r["doc_id"]) for r in rows}
    for task in TASKS:  # lmms-eval's sharding: rank r takes documents r::2
        assert {d for t, d in per_rank[0] if t == task} == set(range(0, LIMIT, 2))
        assert {d for t, d in per_rank[1] if t == task} == set(range(1, LIMIT, 2))
    (results_file,) = out.rglob("*_results.json")
    cli = json.loads(results_file.read_text())["results"]
    for task in TASKS:
        (samples_file,) = out.rglob(f"*_samples_{task}.jsonl")
        assert len(samples_file.read_text().splitlines()) == LIMIT  # gathered on rank 0

    lm = FGClipLlava(pretrained=str(tiny_export), device="cpu", batch_size=4)
    manager = TaskManager(include_path=str(SYNTHETIC_DIR), include_defaults=False, verbosity="ERROR")
    single = simple_evaluate(model=lm, tasks=TASKS, task_manager=manager, limit=LIMIT, bootstrap_iters=0,
                             verbosity="ERROR")["results"]
    for task in TASKS:
        metrics = [k for k in single[task] if k.endswith(",none") and "stderr" not in k]
        assert metrics
        for key in metrics:
            assert cli[task][key] == pytest.approx(single[task][key]), key
