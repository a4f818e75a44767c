"""A sweep's output folder under concurrent writers and kills at any moment (issue 18,
items 1, 2 and 7): no row lost or duplicated, no job outliving its sweep, no
half-written model trusted, every file valid after the rerun."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from detbench.benchmark import runner
from detbench.benchmark.cell import DONE_FILE
from detbench.benchmark.lock import FolderInUse, FolderLock
from detbench.benchmark.results import ResultsStore
from tests.benchmark.test_sweep import (
    REPO,
    _wait_for,
    check_outputs,
    expected_cells,
    in_process,
    read_rows,
    sweep_env,
    write_sweep,
)


def test_two_writers_keep_each_others_rows(tmp_path):
    """Two stores opened on one folder (two sweeps, as in the issue: 3 cells and 2
    other cells): every row each of them added is in the file."""
    a, b = ResultsStore(str(tmp_path)), ResultsStore(str(tmp_path))
    for i in range(3):
        a.add({"cell_id": f"a{i}", "error": "", "latency_ms": 1.0})
    for i in range(2):
        b.add({"cell_id": f"b{i}", "error": "", "latency_ms": 1.0})
    a.add({"cell_id": "a0", "error": "again"})  # replaces its own row, keeps b's
    rows = ResultsStore(str(tmp_path)).rows
    assert sorted(r["cell_id"] for r in rows) == ["a0", "a1", "a2", "b0", "b1"]
    assert [r["error"] for r in rows if r["cell_id"] == "a0"] == ["again"]


def test_done_cells_are_decided_in_one_place(tmp_path):
    store = ResultsStore(str(tmp_path))
    store.add({"cell_id": "ok", "error": "", "latency_ms": 1.0})
    store.add({"cell_id": "fast", "error": "", "latency_ms": 1.0, "speed_only": True})
    store.add({"cell_id": "bad", "error": "boom"})
    assert store.done_ids(speed_only=True) == {"ok", "fast"}
    assert store.done_ids(speed_only=False) == {"ok"}  # a full run measures 'fast' again


def _hold_lock(folder):
    """A separate process holding ``folder`` (prints 'held' once it does)."""
    code = (
        "import sys, time; from detbench.benchmark.lock import FolderLock; "
        "l = FolderLock(sys.argv[1]); print('held', flush=True); time.sleep(600)"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, folder], stdout=subprocess.PIPE, text=True, env=sweep_env()
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_sweep_into_a_held_folder_says_who_holds_it(tmp_path, capsys):
    out = str(tmp_path / "out")
    grid = write_sweep(tmp_path, ['axis { name: "resolution" values: "64" }'])
    holder = _hold_lock(out)
    try:
        code, stdout, err = in_process(capsys, "--grid", grid, "--out", out, "--speed-only")
        assert code == 2, stdout + err
        assert err.count("\n") == 1 and f"pid {holder.pid} on host" in err, err
        assert " since " in err and "UTC" in err and out in err
        assert not os.path.exists(os.path.join(out, "results.jsonl"))
        # the dry run only reads: it is not refused
        code, stdout, err = in_process(capsys, "--grid", grid, "--out", out, "--dry-run")
        assert code == 0, err
    finally:
        holder.kill()
        holder.wait()
    # a holder killed without a chance to clean up does not block the next one
    with FolderLock(out):
        with pytest.raises(FolderInUse):
            FolderLock(out)


def _children(pid):
    kids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(name))
    return kids


def _descendants(pid):
    """Every process below ``pid``: a job is the sweep's child (a fresh process) or
    its grandchild (forked by the fork server, the sweep's child)."""
    kids = {}
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
        kids.setdefault(parent, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            found.append(kid)
            todo.append(kid)
    return found


def _owned(tmp):
    """A job has started: its temporary folder records its pid."""
    return any(
        os.path.exists(os.path.join(tmp, n, runner.OWNER_FILE))
        for n in os.listdir(tmp)
        if n.startswith(runner.TEMP_PREFIX)
    )


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _all_gone(pids, timeout=60):
    """True once every pid in ``pids`` has exited (within ``timeout`` seconds)."""
    deadline = time.time() + timeout
    while not all(_gone(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    return all(_gone(p) for p in pids)


def _start(grid, out, tmp, *extra, env=None):
    env = dict(sweep_env(), TMPDIR=str(tmp), **(env or {}))
    os.makedirs(tmp, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "benchmark/sweep.py", "--grid", grid, "--out", str(out), *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkilled_sweep_takes_its_training_job_with_it(tmp_path):
    """A training of 100000 steps never ends by itself within this test: after the
    sweep's SIGKILL its job must die, and the next run removes its temp folder."""
    grid = write_sweep(tmp_path, ['axis { name: "resolution" values: "64" }'])
    tmp = tmp_path / "tmp"
    proc = _start(grid, tmp_path / "out", tmp, "--train-steps", "100000")
    try:
        assert _wait_for(lambda: _owned(tmp), 300, proc), "no training job started"
        jobs = _descendants(proc.pid)
    finally:
        _kill(proc)
    if not _all_gone(jobs):
        for job in jobs:
            if not _gone(job):
                os.kill(job, signal.SIGKILL)
        pytest.fail("the training job outlived the killed sweep")
    [left] = [n for n in os.listdir(tmp) if n.startswith(runner.TEMP_PREFIX)]
    assert runner.cleanup_orphans(str(tmp)) == [str(tmp / left)]
    assert not os.listdir(tmp)


def _check_rerun(grid, out, tmp, n_cells, *extra, env=None):
    env = dict(TMPDIR=str(tmp), **(env or {}))
    proc = subprocess.run(
        [sys.executable, "benchmark/sweep.py", "--grid", grid, "--out", str(out), *extra],
        cwd=REPO,
        env={**sweep_env(), **env},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = read_rows(str(out))
    ids = [r["cell_id"] for r in rows]
    assert sorted(ids) == sorted(c.cell_id for c in expected_cells(grid))  # each once
    assert len(ids) == n_cells and all(r["error"] == "" for r in rows)
    check_outputs(str(out), n_cells)
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    assert not [n for n in os.listdir(tmp) if n.startswith(runner.TEMP_PREFIX)]
    return proc


@pytest.mark.slow
def test_sigkill_during_training_then_rerun_retrains_from_scratch(tmp_path):
    """Killed while its model trains; what the killed training left in the model folder
    (here a checkpoint at step 2 that is not a finished training: no TRAINED.json) is
    not trusted: the rerun trains all its steps again and records their losses."""
    grid = write_sweep(tmp_path, ['axis { name: "resolution" values: "64" }'])
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    [cell] = expected_cells(grid)
    model_dir = out / "models" / cell.train_key
    proc = _start(grid, out, tmp)
    try:
        assert _wait_for(lambda: _owned(tmp) and model_dir.exists(), 300, proc)
    finally:
        _kill(proc)
    # what a training killed after its step-2 checkpoint (or an orphan) leaves behind
    (model_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    (model_dir / "ckpt-2.index").write_bytes(b"")
    _check_rerun(grid, out, tmp, 1)
    done = json.loads((model_dir / DONE_FILE).read_text())
    assert done["step"] == 2 and set(done["final_losses"]) and done["train_wall_s"] > 0


@pytest.mark.slow
def test_sigkill_during_measurement_then_during_summary(tmp_path):
    """Speed-only, one cell: SIGKILL while its measuring job runs, rerun. Then a run
    with nothing left to measure is killed once it has rewritten results.csv (the
    summary step: results.md, plots and report come next): every file is still valid,
    and the rerun finishes. The row is there once throughout."""
    grid = write_sweep(tmp_path, ['axis { name: "resolution" values: "64" }'])
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    proc = _start(grid, out, tmp, "--speed-only")
    try:
        assert _wait_for(lambda: _owned(tmp), 300, proc), "no measuring job started"
    finally:
        _kill(proc)
    assert not (out / "results.jsonl").exists()
    _check_rerun(grid, out, tmp, 1, "--speed-only")

    csv = out / "results.csv"
    before = csv.stat().st_mtime_ns
    proc = _start(grid, out, tmp, "--speed-only")
    try:
        assert _wait_for(lambda: csv.stat().st_mtime_ns != before, 300, proc)
    finally:
        _kill(proc)
    check_outputs(str(out), 1)  # valid right after the kill: written atomically
    rerun = _check_rerun(grid, out, tmp, 1, "--speed-only")
    assert "1 cells, 1 already done, 0 to run" in rerun.stdout


@pytest.mark.slow
def test_sigkill_during_pretraining_then_rerun_resumes_it(tmp_path):
    """Killed while the sweep's pretraining phase runs, after the pretraining's first
    checkpoint: its job dies with the sweep, and the rerun resumes the pretraining
    from that checkpoint (not from step 0), then trains and measures every cell once."""
    recipe = "resolution: 32 steps: 300 batch_size: 4 num_images: 3"
    grid = write_sweep(tmp_path, ['axis { name: "resolution" values: "64" }'], pretraining=recipe)
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    cache = tmp_path / "cache"
    env = {"DETBENCH_CACHE_DIR": str(cache)}
    pretrained = cache / "pretrained"

    def checkpointed():
        return pretrained.exists() and any(
            (pretrained / n / "checkpoint").exists()
            for n in os.listdir(pretrained)
            if n.endswith(".partial")
        )

    proc = _start(grid, out, tmp, env=env)
    try:
        assert _wait_for(lambda: _children(proc.pid) and checkpointed(), 600, proc)
        jobs = _descendants(proc.pid)
    finally:
        _kill(proc)
    assert _all_gone(jobs), "the pretraining job outlived the killed sweep"
    assert not [n for n in os.listdir(pretrained) if n.endswith(".h5")]
    assert not (out / "results.jsonl").exists()

    _check_rerun(grid, out, tmp, 1, env=env)
    [report] = [n for n in os.listdir(pretrained) if n.endswith(".json")]
    report = json.loads((pretrained / report).read_text())
    assert report["steps"] == 300 and report["resumed_from"] >= 50, report
    assert not [n for n in os.listdir(pretrained) if n.endswith(".partial")]
    [row] = read_rows(str(out))
    assert row["weights_source"].startswith("synthetic pretraining mobilenet_v2-")
    assert row["pretrain_steps"] == 300
