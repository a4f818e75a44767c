"""The local executor's fast path and parallel trainings (issue 28): a cell forked from
the fork server measures what a fresh process measures (detections, mAP, peak
memory); ``--jobs 2`` gives a sequential sweep's rows; a kill during parallel
trainings resumes."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from detbench.benchmark import forkserver, runner
from detbench.benchmark.cell import DONE_FILE
from tests.benchmark.test_sweep import (
    REPO,
    _wait_for,
    check_outputs,
    expected_cells,
    read_rows,
    sweep_env,
    write_sweep,
)
from tests.benchmark.test_sweep_reliability import _descendants, _gone

ACCURACY = ("mAP", "AP/", "AR@")  # the accuracy columns
GRID_AXES = ['axis { name: "resolution" values: "64" values: "96" }']  # two trainings
# what differs between two runs of the same cell: the clock, and where it ran
VARYING = ("latency", "_ms", "_s", "throughput", "reference", "env", "log", "job_process", "rss")


def _sweep(grid, out, *extra, env=None, timeout=1500):
    proc = subprocess.run(
        [sys.executable, "benchmark/sweep.py", "--grid", grid, "--out", str(out), *extra],
        cwd=REPO,
        env=dict(sweep_env(), **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return {r["cell_id"]: r for r in read_rows(str(out))}


def _plain(x):
    """NaN as None, recursively (a row stores an undefined AP as either)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return None if isinstance(x, float) and x != x else x


def _comparable(row):
    return {k: v for k, v in row.items() if not any(s in k for s in VARYING)}


def _kill_during_parallel_trainings(grid, out, tmp):
    """Start ``--jobs 2``, SIGKILL the sweep once the fork server runs two trainings;
    returns the pids that were below it (all must go with it)."""
    os.makedirs(tmp)
    proc = subprocess.Popen(
        [sys.executable, "benchmark/sweep.py", "--grid", grid, "--out", str(out), "--jobs", "2"],
        cwd=REPO,
        env=dict(sweep_env(), TMPDIR=str(tmp)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # the fork server and its two training children
        assert _wait_for(lambda: len(_descendants(proc.pid)) >= 3, 600, proc)
        jobs = _descendants(proc.pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 60
    while not all(_gone(p) for p in jobs) and time.time() < deadline:
        time.sleep(0.2)
    return jobs


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The same two-training grid swept with --jobs 1, and with --jobs 2 killed during
    its parallel trainings then rerun (both fast path)."""
    tmp = tmp_path_factory.mktemp("fastpath")
    grid = write_sweep(tmp, GRID_AXES)
    one = _sweep(grid, tmp / "jobs1", "--jobs", "1")
    killed = _kill_during_parallel_trainings(grid, tmp / "jobs2", tmp / "tmp")
    two = _sweep(grid, tmp / "jobs2", "--jobs", "2", env={"TMPDIR": str(tmp / "tmp")})
    return grid, tmp, one, two, killed


def _metrics_here(pipeline_text, model_dir):
    """The cell's COCO metrics computed in this (pytest's) process, no job involved."""
    import tensorflow as tf
    from google.protobuf import text_format

    from detbench.builders.model_builder import build_model
    from detbench.data import build_dataset
    from detbench.evaluation.runner import evaluate_model, restore_model
    from detbench.protos import pipeline_pb2

    pipeline = text_format.Parse(pipeline_text, pipeline_pb2.Pipeline())
    model = build_model(pipeline.model, is_training=False)
    image = next(iter(build_dataset(pipeline.eval_input_reader, 1, training=False)))["image"]
    inputs, shapes = model.preprocess(tf.cast(image, tf.float32))
    restore_model(model, model_dir, {"image": inputs, "true_shape": shapes})
    return evaluate_model(model, pipeline, progress=False)


def test_forked_cell_measures_what_a_fresh_process_measures(sweeps):
    """One trained cell measured again in a fresh process (--no-fast-path's path): the
    same COCO metrics (per category too: the same detections), FLOPs and parameters as
    its forked measurement, and a peak RSS within 10% of it; and the metrics are those
    of the checkpoint evaluated here, in this process."""
    grid, tmp, one, _, _ = sweeps
    cell = expected_cells(grid)[0]
    forked = one[cell.cell_id]
    assert forked["error"] == "" and forked["job_process"] == forkserver.PROCESS_NAME
    spec = {
        "test_pipeline": forked["test_pipeline"],
        "model_dir": str(tmp / "jobs1" / "models" / forked["train_key"]),
        "settings": {"num_warmup": 1, "num_runs": 2, "num_timing_images": 2},
        "speed_only": False,
    }
    fresh = runner.run_job("measure", spec)
    assert fresh["error"] == "" and fresh["job_process"] == "fresh"
    metrics = [k for k in forked if k.startswith(ACCURACY)]
    assert "AR@100" in metrics and len([k for k in metrics if k.startswith("AP/")]) == 3
    for key in metrics + ["gflops", "params", "params_trainable"]:
        assert _plain(fresh[key]) == _plain(forked[key]), key
    assert abs(forked["peak_rss_mb"] - fresh["peak_rss_mb"]) <= 0.1 * fresh["peak_rss_mb"]
    # the harness overhead the fork saves: no Python start, no TensorFlow import
    assert forked["phase_imports_s"] < fresh["phase_imports_s"]
    here = _metrics_here(forked["test_pipeline"], spec["model_dir"])
    for key in metrics:
        assert _plain(here[key]) == _plain(forked[key]), key


def test_two_jobs_give_the_rows_of_one(sweeps):
    """--jobs 2 trains both models at once, on one thread each; the rows are --jobs 1's,
    timings aside, and the accuracy columns within 0.02: training on CPU is not
    bit-reproducible across thread counts (the summation order changes), and two
    steps move the tiny model's mAP (about 0.01) by less than that."""
    grid, _, one, two, _ = sweeps
    assert sorted(one) == sorted(two) == sorted(c.cell_id for c in expected_cells(grid))
    for cid in one:
        a, b = _plain(_comparable(one[cid])), _plain(_comparable(two[cid]))
        assert a["error"] == b["error"] == ""
        assert set(a) == set(b)
        assert (
            abs(one[cid]["peak_rss_mb"] - two[cid]["peak_rss_mb"]) <= 0.1 * one[cid]["peak_rss_mb"]
        )
        for key in a:
            if key.startswith(ACCURACY):  # trained on 1 thread instead of 2: see above
                assert b[key] == pytest.approx(a[key], abs=0.02), key
            elif isinstance(a[key], float):
                assert b[key] == pytest.approx(a[key], abs=1e-3), key
            else:
                assert a[key] == b[key], key


def test_timed_cells_run_alone(monkeypatch):
    """The schedule: up to N trainings overlap; a measure starts only when nothing
    runs, and nothing starts while it runs (jobs that sleep and log their intervals)."""
    spans, lock = {}, threading.Lock()

    def job(kind, spec, server=None):
        start = time.monotonic()
        time.sleep(0.2)
        with lock:
            spans[spec["name"]] = (kind, start, time.monotonic(), spec.get("threads"))
        return {"error": ""}

    monkeypatch.setattr(runner, "run_job", job)
    monkeypatch.setattr(runner, "machine_cores", lambda: 4)
    executor = runner.LocalExecutor(jobs=2, fast_path=False)
    kinds = ["train", "train", "train", "measure", "train", "measure", "measure"]
    jobs = [(i, kind, {"name": i}) for i, kind in enumerate(kinds)]
    assert sorted(k for k, _ in executor.map(jobs)) == list(range(len(kinds)))
    for i, (kind, start, end, threads) in spans.items():
        others = [s for j, s in spans.items() if j != i and s[1] < end and start < s[2]]
        if kind == "measure":
            assert not others and threads is None
        else:  # at its start, at most one other training runs
            assert all(o[0] == "train" for o in others)
            assert sum(o[1] <= start < o[2] for o in others) <= 1
            assert threads == {"intra_op_threads": 2, "inter_op_threads": 2}
    # the first two trainings did run together
    assert spans[0][1] < spans[1][2] and spans[1][1] < spans[0][2]


def test_sigkill_during_parallel_trainings_then_rerun_resumes(sweeps):
    """SIGKILL while two trainings run at once (--jobs 2, both forked): every job goes
    with the sweep, and the rerun trains both models from scratch and measures both."""
    grid, tmp, _, two, killed = sweeps
    assert all(_gone(p) for p in killed), "a job outlived the killed sweep"
    assert sorted(two) == sorted(c.cell_id for c in expected_cells(grid))
    assert all(r["error"] == "" for r in two.values())
    for c in expected_cells(grid):
        done = json.loads((tmp / "jobs2" / "models" / c.train_key / DONE_FILE).read_text())
        assert done["step"] == 2
    check_outputs(str(tmp / "jobs2"), 2)
    # the killed jobs' temporary folders were removed by the rerun
    assert not [n for n in os.listdir(tmp / "tmp") if n.startswith(runner.TEMP_PREFIX)]
