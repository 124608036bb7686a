"""`fgclip-lmm eval-lmm` end to end (in-process) and its bad-input errors; real task names pass the preflight."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from lmms_eval.tasks import TaskManager
from PIL import Image

from fgclip_lmm.data.synth.manifest import FORMAT
from fgclip_lmm.eval.lmm import tasks_dir as lmms_tasks
from fgclip_lmm.eval.lmm.cli import EvalInputError, main, parse_args, preflight
from fgclip_lmm.eval.lmm.features import image_key
from fgclip_lmm.eval.lmm.task_files import ATTR_FEATURES, ATTRIBUTES, POPE_FEATURES, POPE_SPLITS, write_parquet
from fgclip_lmm.testing import attr_rows, pope_rows

LMMS_TASKS = Path(__import__("lmms_eval").__file__).parent / "tasks"


@pytest.fixture()
def tiny_export(tiny_llava_export: Path) -> Path:
    return tiny_llava_export


def _distinct_images(task_dir: Path, tasks: list[str], limit: int) -> int:
    keys = set()
    for task in tasks:
        config = lmms_tasks.read_task_yaml(task_dir / f"{task}.yaml")
        rows = pq.read_table(task_dir / config["dataset_kwargs"]["data_files"]["test"]).to_pylist()[:limit]
        keys |= {image_key(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB")) for r in rows}
    return len(keys)


def test_eval_lmm_on_packaged_synthetic_tasks(tiny_export: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc = main(["--model", str(tiny_export), "--tasks", "fgclip_pope,fgclip_attr", "--out", str(out),
               "--limit", "6", "--batch-size", "4"])
    assert rc == 0
    payload = json.loads((out / "eval_lmm.json").read_text())
    report, header = payload["report"], payload["header"]
    pope = report["pope"]["fgclip_pope"]
    assert sorted(pope["splits"]) == sorted(f"fgclip_pope_{s}" for s in POPE_SPLITS)
    f1s = [s["f1"] for s in pope["splits"].values()]
    assert pope["mean_f1"] == pytest.approx(sum(f1s) / 3)
    assert pope["pooled"]["n"] == 18
    for task, split in pope["splits"].items():
        assert split["f1"] == pytest.approx(payload["lmms_eval"]["results"][task]["pope_f1_score,none"])
        answers = [json.loads(line)["filtered_resps"][0]
                   for line in (out / f"samples_{task}.jsonl").read_text().splitlines()]
        assert split["yes_rate"] == pytest.approx(answers.count("yes") / len(answers))
    assert sorted(report["pairs"]) == sorted(f"fgclip_attr_{a}" for a in ATTRIBUTES)
    assert all(entry["n_pairs"] == 3 for cats in report["pairs"].values() for entry in cats.values())
    assert report["calibration"]["pooled_pope"]["n_scored"] == 18
    assert len((out / "yes_no_scores.jsonl").read_text().splitlines()) == 18 + 6 * 6
    tasks = [f"fgclip_pope_{s}" for s in POPE_SPLITS] + [f"fgclip_attr_{a}" for a in ATTRIBUTES]
    distinct = _distinct_images(lmms_tasks.SYNTHETIC_DIR, tasks, 6)
    assert header["feature_cache"]["misses"] == distinct
    assert header["feature_cache"]["hits"] + distinct == 18 + 36
    table = (out / "eval_lmm.md").read_text()
    assert "mean F1 over splits" in table and "fgclip_attr_count" in table and "AUROC" in table


def _fake_world(root: Path, pope: dict[str, list[dict]], mme: list[dict]) -> Path:
    files = {"pope": {s: f"pope/{s}.parquet" for s in pope}, "mme": "mme/attributes.parquet"}
    for split, rows in pope.items():
        write_parquet(rows, POPE_FEATURES, root / files["pope"][split])
    write_parquet(mme, ATTR_FEATURES, root / files["mme"])
    (root / "manifest.json").write_text(json.dumps({"format": FORMAT, "files": files}))
    return root


def test_eval_lmm_world_rebuilds_the_tasks(tiny_export: Path, tmp_path: Path) -> None:
    world = _fake_world(tmp_path / "world", {s: pope_rows(s) for s in POPE_SPLITS},
                        attr_rows("color") + attr_rows("count"))
    out = tmp_path / "out"
    assert main(["--model", str(tiny_export), "--tasks", "fgclip_pope_random,fgclip_attr", "--out", str(out),
                 "--world", str(world), "--no-calibration"]) == 0
    report = json.loads((out / "eval_lmm.json").read_text())["report"]
    assert report["pope"]["fgclip_pope"]["pooled"]["n"] == 12  # the world's 12 questions, not the packaged ones
    assert sorted(report["pairs"]) == ["fgclip_attr_color", "fgclip_attr_count"]
    assert report["calibration"] == {}
    assert (out / "tasks" / "fgclip_attr_count.yaml").is_file()


def _error(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_inputs_fail_before_evaluation(tiny_export: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = str(tmp_path / "out")
    err = _error(["--model", str(tmp_path / "nope"), "--tasks", "fgclip_pope", "--out", out], capsys)
    assert "checkpoint directory not found" in err
    (tmp_path / "clip").mkdir()
    (tmp_path / "clip" / "config.json").write_text('{"model_type": "clip"}')
    assert "model_type='clip'" in _error(["--model", str(tmp_path / "clip"), "--tasks", "fgclip_pope", "--out", out],
                                         capsys)
    err = _error(["--model", str(tiny_export), "--tasks", "fgclip_pope_randm", "--out", out], capsys)
    assert "unknown task 'fgclip_pope_randm'" in err and "Did you mean: fgclip_pope_random" in err
    err = _error(["--model", str(tiny_export), "--tasks", "fgclip_attr_color", "--limit", "5", "--out", out], capsys)
    assert "even limit" in err
    bad = [dict(r) for r in pope_rows("random")]
    bad[3]["answer"] = "maybe"
    world = _fake_world(tmp_path / "bad_world", {s: bad for s in POPE_SPLITS}, attr_rows("color"))
    err = _error(["--model", str(tiny_export), "--tasks", "fgclip_pope", "--out", out, "--world", str(world)], capsys)
    assert "row 3: answer 'maybe' is not yes/no" in err
    broken = attr_rows("color")
    broken[1]["image"] = {"bytes": b"not a png", "path": None}
    world = _fake_world(tmp_path / "bad_image", {s: pope_rows(s) for s in POPE_SPLITS}, broken)
    err = _error(["--model", str(tiny_export), "--tasks", "fgclip_attr", "--out", out, "--world", str(world)], capsys)
    assert "row 1: image does not load" in err
    unpaired = attr_rows("color")[:-1]
    world = _fake_world(tmp_path / "unpaired", {s: pope_rows(s) for s in POPE_SPLITS}, unpaired)
    err = _error(["--model", str(tiny_export), "--tasks", "fgclip_attr", "--out", out, "--world", str(world)], capsys)
    assert "MME pairs need exactly 2" in err
    assert "manifest.json not found" in _error(
        ["--model", str(tiny_export), "--tasks", "fgclip_pope", "--out", out, "--world", str(tmp_path)], capsys)
    assert not (tmp_path / "out" / "eval_lmm.json").exists()


def test_real_task_names_pass_through(tiny_export: Path, tmp_path: Path) -> None:
    """The online tasks resolve by name (hallusion via its rule-based copy); no data is touched offline."""
    dirs = [LMMS_TASKS / d for d in ("pope", "mme", "hallusion_bench", "mmvp")]
    manager = TaskManager(include_path=[str(d) for d in dirs + [lmms_tasks.SYNTHETIC_DIR, lmms_tasks.HUB_DIR]],
                          include_defaults=False, verbosity="ERROR")
    real = "pope_random,pope_pop,pope_adv,mme,hallusion_bench_image,mmvp"
    args = parse_args(["--model", str(tiny_export), "--tasks", real, "--out", str(tmp_path)])
    names, aliased = preflight(args, manager, [lmms_tasks.SYNTHETIC_DIR, lmms_tasks.HUB_DIR])
    assert names == ["pope_random", "pope_pop", "pope_adv", "mme", "fgclip_hallusion_bench_image", "mmvp"]
    assert aliased == {"hallusion_bench_image": "fgclip_hallusion_bench_image"}
    with pytest.raises(EvalInputError, match="Did you mean: pope_adv"):
        preflight(parse_args(["--model", str(tiny_export), "--tasks", "pope_advv", "--out", str(tmp_path)]),
                  manager, [lmms_tasks.SYNTHETIC_DIR])


MME_YAML = """dataset_path: parquet
dataset_kwargs:
  data_files:
    test: data/mme.parquet
task: fgclip_test_mme
test_split: test
output_type: generate_until
doc_to_visual: !function lmms_eval.tasks.mme.utils.mme_doc_to_visual
doc_to_text: !function lmms_eval.tasks.mme.utils.mme_doc_to_text
doc_to_target: answer
generation_kwargs: {max_new_tokens: 4, temperature: 0, do_sample: false}
process_results: !function lmms_eval.tasks.mme.utils.mme_process_results
metric_list:
  - metric: mme_perception_score
    aggregation: !function lmms_eval.tasks.mme.utils.mme_aggregate_results
    higher_is_better: true
lmms_eval_specific_kwargs:
  default: {pre_prompt: "", post_prompt: "\\nAnswer the question using a single word or phrase."}
"""


def test_report_on_lmms_eval_mme_scoring_matches_its_score(tiny_export: Path, tmp_path: Path) -> None:
    """A task scored by lmms-eval's own MME functions: per-category entries whose scores sum to MME's."""
    from lmms_eval.evaluator import simple_evaluate

    from fgclip_lmm.eval.lmm.model import FGClipLlava
    from fgclip_lmm.eval.lmm.report import build_report

    write_parquet(attr_rows("color") + attr_rows("count"), ATTR_FEATURES, tmp_path / "data" / "mme.parquet")
    (tmp_path / "fgclip_test_mme.yaml").write_text(MME_YAML)
    lm = FGClipLlava(pretrained=str(tiny_export), device="cpu", batch_size=4)
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False, verbosity="ERROR")
    results = simple_evaluate(model=lm, tasks=["fgclip_test_mme"], task_manager=manager, bootstrap_iters=0,
                              log_samples=True, verbosity="ERROR")
    entries = build_report(results, {})["pairs"]["fgclip_test_mme"]
    assert sorted(entries) == ["color", "count"] and all(e["n_pairs"] == 3 for e in entries.values())
    mme_score = results["results"]["fgclip_test_mme"]["mme_perception_score,none"]
    assert mme_score > 0 and sum(e["score"] for e in entries.values()) == pytest.approx(mme_score)


def test_packaged_hallusion_task_uses_the_rule_based_aggregators() -> None:
    from lmms_eval.utils import load_yaml_config

    config = load_yaml_config(str(lmms_tasks.HUB_DIR / "fgclip_hallusion_bench_image.yaml"), mode="full")
    names = {m["metric"]: m["aggregation"].__name__ for m in config["metric_list"]}
    assert names == {k: f"hb_aggregation_result_{k}_intern" for k in ("aAcc", "qAcc", "fAcc")}
    assert config["dataset_path"] == "lmms-lab-encoder/HallusionBench" and "token" not in config.get("dataset_kwargs",
                                                                                                     {})
