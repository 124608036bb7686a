"""`fgclip-lmm eval-lmm`: run lmms-eval in-process on a HF LLaVA export and write JSON + markdown tables.

Offline, on the packaged synthetic tasks (or on tasks rebuilt from your own synthetic world with `--world`):

    fgclip-lmm eval-lmm --model DIR --tasks fgclip_pope,fgclip_attr --out runs/eval --world runs/world
    fgclip-lmm eval-lmm --model DIR --tasks fgclip_pope --out runs/eval      # the packaged world's tasks

Without `--world` the synthetic tasks are the packaged copy (built from `fgclip-lmm synth --images 200 --seed 0
--size 64`), not your world; the console header and the report say which world the tasks come from.

With internet (hub datasets; lmms-eval's built-in tasks pass straight through, and `hallusion_bench_image` runs
as `fgclip_hallusion_bench_image`, the same data scored by lmms-eval's rule-based `_intern` aggregators instead of
the GPT-4 judge):

    fgclip-lmm eval-lmm --model DIR --tasks pope_random,pope_pop,pope_adv,mme,hallusion_bench_image,mmvp \
        --out runs/eval-real --batch-size 8 --device cuda

Several GPUs (data parallel; lmms-eval shards documents by rank, rank 0 writes the report):

    accelerate launch --num_processes 8 -m fgclip_lmm.cli eval-lmm --model DIR \
        --tasks pope_random,pope_pop,pope_adv --out runs/eval

Several CPU processes (tests, no GPU): `accelerate launch --cpu --num_processes 2` starts ONE process
(accelerate's simple launcher); use its torchrun launcher with the CPU switch instead:

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m fgclip_lmm.cli eval-lmm ...

The plugin alone, through lmms-eval's own CLI (the `fgclip_llava` entry point). lmms-eval 0.7.3 finds our tasks
only through `--include_path`; eval-lmm prints (and writes to its report) the lmms-eval command that runs the same
evaluation, include path included, e.g.:

    lmms-eval --model fgclip_llava --model_args pretrained=DIR,score_yes_no=true,scores_path=runs/lmms/p_yes.jsonl \
        --batch_size 8 --include_path "$(python -c 'import fgclip_lmm.eval.lmm.tasks_dir as t; print(t.TASKS_DIR)')" \
        --tasks fgclip_pope,fgclip_attr,fgclip_hallusion_bench_image --output_path runs/lmms --log_samples
    accelerate launch --num_processes 8 -m lmms_eval --model fgclip_llava --model_args pretrained=DIR \
        --batch_size 8 --tasks pope_random,pope_pop,pope_adv,mme --output_path runs/lmms --log_samples

Outputs in `--out`: `eval_lmm.json` (report + lmms-eval results + config), `eval_lmm.md` (tables),
`samples_<task>.jsonl` (every question, answer and score) and `yes_no_scores.jsonl` (P(yes)/P(no) per question).
Bad input (unwritable `--out`, missing checkpoint, unknown task, malformed task data, odd `--limit` on pair tasks)
fails with a one-line message before any model is loaded. An interrupted run resumes: answers are saved under
`OUT/cache/` as they finish (per model and settings, `eval/lmm/cache.py`), so a rerun computes only the rest;
`--fresh` recomputes everything. The header of `eval_lmm.json` says how many answers came from the cache.

Blind controls and paired comparison (`controls.py`, `paired.py`):

    fgclip-lmm eval-lmm --model DIR --tasks fgclip_pope,fgclip_attr --out runs/eval --controls gray,shuffled
    fgclip-lmm eval-lmm --compare runs/eval-fgclip runs/eval-clip --out runs/compare

`--controls` asks every question again with a gray image and with another image of the task (samples under
`OUT/controls/<kind>/`) and reports per task and category the accuracy with the image, with each control and the
visual gain; `--compare A B` writes `compare.json`/`compare.md`: A - B per category with a 95% paired bootstrap
interval and McNemar's exact p-value (A and B are eval-lmm output directories over the same questions).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fgclip_lmm.errors import InputError, require_writable_dir, run_command
from fgclip_lmm.eval.lmm.checkpoint import check_checkpoint
from fgclip_lmm.eval.lmm.provenance import lmms_eval_commands, world_line
from fgclip_lmm.eval.lmm.tasks_dir import (
    HUB_DIR,
    SYNTHETIC_DIR,
    TASK_ALIASES,
    TaskDataError,
    check_task_data,
    local_group_names,
    local_task_yamls,
    read_task_yaml,
    suggest,
)

PAIR_TASK_PREFIXES = ("fgclip_attr", "mme")
# Requests per generate call. The plugin batches by image and shares one tower pass per image, so 8 keeps a
# POPE image's questions together; the tiny CPU models and a 7B model in bf16 on one GPU both fit.
DEFAULT_BATCH_SIZE = 8
CACHE_DIR = "cache"  # answered requests, per model + settings (resume after an interruption)


class EvalInputError(InputError):
    """Bad command-line input, reported before evaluation starts."""


@dataclass(frozen=True)
class EvalLmmConfig:
    model: str
    tasks: list[str]
    out: Path
    limit: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    world: Path | None = None
    device: str | None = None
    dtype: str = "auto"
    calibration: bool = True
    yes_no_rule: str = "llava"
    seed: int = 0
    verbosity: str = "WARNING"
    fresh: bool = False  # ignore (delete) answers cached by an earlier, interrupted run
    controls: tuple[str, ...] = ()  # blind controls: gray, shuffled
    compare: tuple[Path, Path] | None = None  # two eval-lmm output dirs to compare instead of evaluating


def parse_args(argv: list[str]) -> EvalLmmConfig:
    p = argparse.ArgumentParser(prog="fgclip-lmm eval-lmm", description=__doc__.splitlines()[0])
    p.add_argument("--model", help="HF LLaVA export directory (or hub id); required unless --compare")
    p.add_argument("--tasks", help="comma-separated lmms-eval task/group names; required unless --compare")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--limit", type=int, default=None, help="first N documents per task (testing)")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"requests per generate call (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--world", type=Path, default=None,
                   help="your synthetic world (fgclip-lmm synth --out DIR): build the fgclip_* tasks from it into "
                        "OUT/tasks (default: the packaged tasks, built from a 200-image seed-0 world)")
    p.add_argument("--device", default=None, help="cuda, cuda:0, cpu (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="auto, float32, bfloat16, float16")
    p.add_argument("--no-calibration", dest="calibration", action="store_false", help="skip P(yes) scoring")
    p.add_argument("--yes-no-rule", default="llava", choices=["llava", "strict"],
                   help="llava: no/not in the first sentence = no, else yes; strict: neither = unparsed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbosity", default="WARNING", help="lmms-eval log level")
    p.add_argument("--fresh", action="store_true",
                   help=f"recompute every answer (default: reuse those cached in OUT/{CACHE_DIR} by an earlier run)")
    p.add_argument("--controls", default="", help="comma-separated blind controls to run too: gray, shuffled")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"), default=None,
                   help="compare two eval-lmm output directories (paired bootstrap + McNemar) instead of evaluating")
    a = p.parse_args(argv)
    from fgclip_lmm.eval.lmm.controls import parse_controls

    if a.compare is None and (not a.model or not a.tasks):
        p.error("--model and --tasks are required (unless --compare RUN_A RUN_B)")
    try:
        controls = tuple(parse_controls(a.controls))
    except ValueError as exc:
        raise EvalInputError(f"--controls: {exc}") from exc
    tasks = [t.strip() for t in (a.tasks or "").split(",") if t.strip()]
    return EvalLmmConfig(a.model or "", tasks, a.out, a.limit, a.batch_size, a.world, a.device, a.dtype,
                         a.calibration, a.yes_no_rule, a.seed, a.verbosity, a.fresh, controls,
                         tuple(a.compare) if a.compare else None)


def _task_dirs(args: EvalLmmConfig) -> list[Path]:
    if args.world is None:
        return [SYNTHETIC_DIR, HUB_DIR]
    from fgclip_lmm.eval.lmm.world import build_tasks_from_world

    built = args.out / "tasks"
    done = built / ".complete"
    if int(os.environ.get("RANK", "0")) == 0:
        done.unlink(missing_ok=True)
        try:
            build_tasks_from_world(args.world, built)
        except TaskDataError as exc:
            raise EvalInputError(str(exc)) from exc
        done.touch()
    else:  # other ranks wait for rank 0's files instead of writing the same paths concurrently
        deadline = time.monotonic() + 600
        while not done.exists():
            if time.monotonic() > deadline:
                raise EvalInputError(f"timed out waiting for rank 0 to build {built}")
            time.sleep(0.5)
    return [built, HUB_DIR]


def resolve_tasks(requested: list[str], known: set[str], local: dict[str, Path]) -> tuple[list[str], dict[str, str]]:
    """Apply aliases and check every name; unknown names raise with close matches and the offline tasks."""
    names, aliased = [], {}
    for name in requested:
        target = TASK_ALIASES.get(name, name)
        if target != name:
            aliased[name] = target
        if target not in known:
            close = suggest(name, sorted(known))
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise EvalInputError(f"unknown task {name!r}.{hint} Offline tasks: {', '.join(sorted(local))} "
                                 "(groups fgclip_pope, fgclip_attr).")
        names.append(target)
    return names, aliased


def check_arguments(args: EvalLmmConfig) -> None:
    """The checks that need neither lmms-eval nor torch (run first, so they answer at once)."""
    if args.batch_size < 1:
        raise EvalInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:
        raise EvalInputError(f"--limit must be >= 1, got {args.limit}")
    if not args.tasks:
        raise EvalInputError("--tasks is empty")
    try:
        check_checkpoint(args.model)
    except (FileNotFoundError, ValueError) as exc:
        raise EvalInputError(str(exc)) from exc


def preflight(args: EvalLmmConfig, task_manager: Any, task_dirs: list[Path]) -> tuple[list[str], dict[str, str]]:
    """Every check that needs no model: arguments, checkpoint, limits, task names, offline data."""
    check_arguments(args)
    local = local_task_yamls(task_dirs)
    names, aliased = resolve_tasks(args.tasks, set(task_manager.all_tasks), local)
    leaves = set(task_manager.all_subtasks) & set(_expand(names, task_manager))
    if args.limit is not None and args.limit % 2 and any(t.startswith(PAIR_TASK_PREFIXES) for t in leaves):
        raise EvalInputError(f"--limit {args.limit} is odd: yes/no pair tasks (MME style) need an even limit")
    for task in sorted(leaves & set(local)):
        try:
            check_task_data(task, local[task])
        except TaskDataError as exc:
            raise EvalInputError(str(exc)) from exc
    return names, aliased


def _expand(names: list[str], task_manager: Any) -> list[str]:
    """Leaf task names under groups and tags (recursively, string entries)."""
    out: list[str] = []
    for name in names:
        entry = task_manager.task_index.get(name)
        if entry is None:
            continue
        if entry["type"] == "tag":
            out += _expand(list(entry["task"]), task_manager)
        elif entry["type"] == "group":
            members = read_task_yaml(Path(entry["yaml_path"])).get("task", [])
            out += _expand([m for m in members if isinstance(m, str)], task_manager)
        else:
            out.append(name)
    return out


def gather_from_ranks(model: Any) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
    """Every rank's P(yes)/P(no) records (one per task and doc), summed feature-cache counters and summed
    response-cache counters (requests answered from disk / computed)."""
    local = [{**asdict(s), "yes_prob": s.yes_prob} for s in model.yes_no_scores.values()]
    responses = model.response_cache.stats.as_dict() if model.response_cache is not None else {}
    mine = (local, model.feature_cache.stats.as_dict(), responses)
    parts = [mine]
    if model.world_size > 1:
        import torch.distributed as dist

        parts = [None] * model.world_size  # type: ignore[list-item]
        dist.all_gather_object(parts, mine)
    unique = {(r["task"], r["doc_id"]): r for records, _, _ in parts for r in records}  # rank padding repeats
    cache = {key: sum(stats[key] for _, stats, _ in parts) for key in parts[0][1]}
    answered = {key: sum(stats[key] for _, _, stats in parts) for key in parts[0][2]}
    return [unique[k] for k in sorted(unique)], cache, answered


def write_outputs(out: Path, results: dict[str, Any], report: dict[str, Any], header: dict[str, Any],
                  scores: list[dict[str, Any]]) -> None:
    from fgclip_lmm.eval.lmm.report import to_markdown

    out.mkdir(parents=True, exist_ok=True)
    payload = {"header": header, "report": report, "lmms_eval": {k: results.get(k) for k in
               ("results", "versions", "n-samples", "higher_is_better", "config", "groups")}}
    (out / "eval_lmm.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (out / "eval_lmm.md").write_text(to_markdown(report, header))
    write_samples(out, results)
    with (out / "yes_no_scores.jsonl").open("w") as f:
        for record in scores:
            f.write(json.dumps(record) + "\n")


def run(args: EvalLmmConfig) -> dict[str, Any] | None:
    """Preflight, evaluate, report; returns the report on rank 0 (which writes the files), None elsewhere."""
    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from fgclip_lmm.eval.lmm.model import FGClipLlava
    from fgclip_lmm.eval.lmm.report import build_report

    task_dirs = _task_dirs(args)
    local = set(local_task_yamls(task_dirs)) | local_group_names(task_dirs)
    # Indexing lmms-eval's ~2000 built-in YAMLs takes seconds: skip it when every task is one of ours.
    only_local = all(TASK_ALIASES.get(name, name) in local for name in args.tasks)
    task_manager = TaskManager(verbosity=args.verbosity, include_path=[str(d) for d in task_dirs],
                               include_defaults=not only_local, model_name="fgclip_llava")
    names, aliased = preflight(args, task_manager, task_dirs)
    provenance = run_provenance(args, names, task_manager, task_dirs)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"eval-lmm: {args.model} on {','.join(names)}, batch size {args.batch_size}"
              + (f", limit {args.limit}" if args.limit else "") + (f"; {provenance['tasks_world']}"
                                                                   if provenance["tasks_world"] else ""), flush=True)
    cache_dir = args.out / CACHE_DIR
    model = FGClipLlava(pretrained=args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                        score_yes_no=args.calibration, yes_no_rule=args.yes_no_rule, cache_dir=str(cache_dir),
                        cache_fresh=args.fresh)
    start = time.perf_counter()
    results = simple_evaluate(model=model, tasks=names, task_manager=task_manager, limit=args.limit,
                              bootstrap_iters=0, log_samples=True, verbosity=args.verbosity,
                              random_seed=args.seed, numpy_random_seed=args.seed, torch_random_seed=args.seed)
    elapsed = time.perf_counter() - start
    scores, cache, answered = gather_from_ranks(model)
    control_results = run_controls(args, model, names, task_manager)
    if model.rank != 0 or results is None:
        return None
    report = build_report(results, {(r["task"], r["doc_id"]): r["yes_prob"] for r in scores})
    if control_results:
        report["controls"] = controls_section(results, control_results)
    header = {"model": args.model, "tasks": ",".join(names), "aliases": aliased or None, "limit": args.limit,
              "batch_size": args.batch_size, "yes_no_rule": args.yes_no_rule,
              "controls": list(args.controls) or None, "world_size": model.world_size, "seconds": round(elapsed, 2),
              "feature_cache": cache, "response_cache": {**answered, "dir": str(cache_dir)},
              "task_dirs": [str(d) for d in task_dirs], **provenance}
    write_outputs(args.out, results, report, header, scores)
    for kind, control in control_results.items():
        write_samples(args.out / "controls" / kind, control)
    print("the same evaluation through lmms-eval's CLI:\n  " + "\n  ".join(provenance["lmms_eval_command"]))
    return report


def run_provenance(args: EvalLmmConfig, names: list[str], task_manager: Any, task_dirs: list[Path]) -> dict[str, Any]:
    """`tasks_world` (which world the synthetic tasks come from; None when none runs) and `lmms_eval_command`."""
    synthetic = set(local_task_yamls(task_dirs[:1]))
    runs_synthetic = bool(synthetic & set(_expand(names, task_manager)))
    model_args = {"dtype": args.dtype, "device": args.device, "score_yes_no": "true" if args.calibration else None,
                  "scores_path": str(args.out / "lmms" / "p_yes.jsonl") if args.calibration else None,
                  "yes_no_rule": args.yes_no_rule}
    commands = lmms_eval_commands(args.model, names, task_dirs, model_args, args.batch_size, args.limit, args.seed,
                                  args.out / "lmms")
    return {"tasks_world": world_line(task_dirs[0], packaged=args.world is None) if runs_synthetic else None,
            "lmms_eval_command": commands}


def run_controls(args: EvalLmmConfig, model: Any, names: list[str], task_manager: Any) -> dict[str, dict[str, Any]]:
    """Evaluate the same tasks again once per blind control (every rank); {kind: results} (None off rank 0)."""
    from lmms_eval.evaluator import simple_evaluate

    from fgclip_lmm.eval.lmm.controls import ImageControl

    out = {}
    for kind in args.controls:
        model.image_control = ImageControl(kind, args.seed)
        model.reset_run_state()
        out[kind] = simple_evaluate(model=model, tasks=names, task_manager=task_manager, limit=args.limit,
                                    bootstrap_iters=0, log_samples=True, verbosity=args.verbosity,
                                    random_seed=args.seed, numpy_random_seed=args.seed, torch_random_seed=args.seed)
    model.image_control = None
    return out


def controls_section(results: dict[str, Any], control_results: dict[str, Any]) -> dict[str, Any]:
    """The report's `controls` block: kinds and, per task and category, accuracy with image / controls, gain."""
    from fgclip_lmm.eval.lmm.controls import control_report
    from fgclip_lmm.eval.lmm.paired import question_outcomes

    image = question_outcomes(results.get("samples", {}))
    blind = {kind: question_outcomes(r.get("samples", {})) for kind, r in control_results.items()}
    return {"kinds": list(control_results), "by_task": control_report(image, blind)}


def write_samples(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for task, samples in results.get("samples", {}).items():
        with (out / f"samples_{task}.jsonl").open("w") as f:
            for sample in samples:
                f.write(json.dumps(sample, default=str) + "\n")


def compare(args: EvalLmmConfig) -> Path:
    """`--compare RUN_A RUN_B`: the paired report written to OUT/compare.json and OUT/compare.md."""
    from fgclip_lmm.eval.lmm.paired import compare_markdown, compare_runs

    run_a, run_b = args.compare
    try:
        report = compare_runs(run_a, run_b, seed=args.seed)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise EvalInputError(f"--compare: {exc}") from exc
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "compare.md").write_text(compare_markdown(report))
    return args.out / "compare.md"


def main(argv: list[str]) -> int:
    return run_command("eval-lmm", _main, list(argv))


def _main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.compare is not None:  # two finished runs: no model, no tasks
        require_writable_dir(args.out)
        print(f"eval-lmm: wrote {compare(args)}")
        return 0
    require_writable_dir(args.out)  # first: whatever else is wrong, the results need somewhere to go
    check_arguments(args)  # before lmms-eval and torch are imported
    report = run(args)
    if report is not None:
        print(f"eval-lmm: wrote {args.out / 'eval_lmm.md'} and {args.out / 'eval_lmm.json'}")
    return 0
