"""The demo's stage runner: laned stages run in parallel (one thread per lane, in order within a lane), records
are written once per finished stage, a failing lane fails the run after the others finish."""
import json
import threading
from pathlib import Path

import pytest
from tqdm import tqdm

from fgclip_lmm.demo.stages import Stage, StageRunner, lane_groups, verify_json


def stage(runner: StageRunner, name: str, lane: str | None, log: list, barrier=None, fail=False) -> Stage:
    path = runner.out / f"{name}.json"

    def run():
        log.append((name, "start", getattr(runner.local, "threads", None)))
        if barrier is not None:
            barrier.wait(timeout=10)  # only passes when both lanes are inside a stage at the same time
        if fail:
            raise RuntimeError(f"{name} failed")
        path.write_text("{}")
        log.append((name, "end"))

    return Stage(name, run, [(path, verify_json)], {"name": name}, lane=lane)


def test_lane_groups_merge_consecutive_laned_stages(tmp_path: Path):
    runner, log = StageRunner(tmp_path), []
    stages = [stage(runner, "a", None, log), stage(runner, "b1", "b", log), stage(runner, "c1", "c", log),
              stage(runner, "b2", "b", log), stage(runner, "d", None, log)]
    assert [[s.name for s in g] for g in lane_groups(stages)] == [["a"], ["b1", "c1", "b2"], ["d"]]


def test_lanes_run_in_parallel_in_order_and_share_the_cores(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    runner, log = StageRunner(tmp_path), []
    barrier = threading.Barrier(2)
    stages = [stage(runner, "first", None, log), stage(runner, "x1", "x", log, barrier),
              stage(runner, "x2", "x", log), stage(runner, "y1", "y", log, barrier), stage(runner, "last", None, log)]
    with tqdm(total=len(stages), disable=True) as bar:
        runner.run_stages(stages, bar)
    names = [e[0] for e in log if e[1] == "start"]
    assert names[0] == "first" and names[-1] == "last" and names.index("x1") < names.index("x2")
    assert {e[2] for e in log if e[1] == "start" and e[0] in ("x1", "x2", "y1")} == {2}  # 4 cores / 2 lanes
    assert sorted(json.loads((tmp_path / "stages.json").read_text())) == ["first", "last", "x1", "x2", "y1"]


def test_a_failing_lane_fails_after_the_other_lane_finished(tmp_path: Path):
    runner, log = StageRunner(tmp_path), []
    stages = [stage(runner, "x1", "x", log, fail=True), stage(runner, "x2", "x", log), stage(runner, "y1", "y", log),
              stage(runner, "y2", "y", log), stage(runner, "after", None, log)]
    with tqdm(total=len(stages), disable=True) as bar, pytest.raises(RuntimeError, match="x1 failed"):
        runner.run_stages(stages, bar)
    done = json.loads((tmp_path / "stages.json").read_text())
    assert sorted(done) == ["y1", "y2"]  # the healthy lane completed; nothing after the group ran
