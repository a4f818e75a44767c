"""The sweep command end to end on a tiny grid (SSD mobilenet_v2, depth 0.25, 64-96 px).

Each cell and each training runs in its own process (a TensorFlow import each),
so the grids stay at 2-3 cells. The command runs as users run it:
``python benchmark/sweep.py --grid ... --out ...`` from the repository root.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from detbench.benchmark import sweep as sweep_cli
from detbench.errors import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
TINY_PIPELINE = os.path.join(HERE, "tiny_ssd.pbtxt")
TINY_SWEEP = os.path.join(HERE, "tiny_sweep.pbtxt")
OUTPUTS = ["results.csv", "results.jsonl", "results.md", "report.html"]


def write_sweep(
    tmp_path,
    axes=None,
    name="sweep.pbtxt",
    settings="num_warmup: 1 num_runs: 2 num_timing_images: 2",
    pretraining="enabled: false",
):
    """A copy of tiny_sweep.pbtxt with the data cached under tmp_path (and other axes;
    no pretraining unless ``pretraining`` gives a recipe)."""
    data = tmp_path / "data"
    axes = axes or ['axis { name: "resolution" values: "64" values: "96" }']
    text = "\n".join(
        [
            'name: "tiny"',
            f'base {{ meta_arch: "ssd" pipeline: "{TINY_PIPELINE}" }}',
            *axes,
            "train_steps: 2",
            f"benchmark {{ {settings} }}",
            f'override: "train_input_reader.synthetic_shapes.cache_dir={data}/train"',
            f'override: "eval_input_reader.synthetic_shapes.cache_dir={data}/val"',
            f"pretraining {{ {pretraining} }}",
        ]
    )
    path = tmp_path / name
    path.write_text(text + "\n")
    return str(path)


def sweep_env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    return env


def run_sweep(*args, timeout=1200):
    proc = subprocess.run(
        [sys.executable, "benchmark/sweep.py", *args],
        cwd=REPO,
        env=sweep_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc


def in_process(capsys, *args):
    """The command in this process (dry runs and errors: no cell process starts)."""
    code = run_cli(sweep_cli.main, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def read_rows(out_dir):
    with open(os.path.join(out_dir, "results.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def expected_cells(grid_path):
    from detbench.config import load_sweep
    from detbench.config.grid import expand_grid

    return expand_grid(load_sweep(grid_path), grid_path).cells


def independent_param_counts(test_pipeline_text, side):
    """Build the cell's model here and let tf_keras count its weights."""
    import tensorflow as tf
    from google.protobuf import text_format
    from tf_keras.src.utils import layer_utils

    from detbench.builders.model_builder import build_model
    from detbench.protos import pipeline_pb2

    pipeline = text_format.Parse(test_pipeline_text, pipeline_pb2.Pipeline())
    model = build_model(pipeline.model, is_training=False)
    model(tf.zeros([1, side, side, 3], tf.uint8))
    trainable = layer_utils.count_params(model.trainable_weights)
    return model.count_params(), trainable


def check_outputs(out_dir, n_rows):
    from PIL import Image

    for name in OUTPUTS:
        path = os.path.join(out_dir, name)
        assert os.path.getsize(path) > 0, name
        assert os.stat(path).st_mode & 0o044, f"{name} is readable by its owner only"
    import pandas as pd

    csv = pd.read_csv(os.path.join(out_dir, "results.csv"))
    assert len(csv) == n_rows and csv.columns[0] == "label"
    plots = sorted(os.listdir(os.path.join(out_dir, "plots")))
    assert plots and all(p.endswith(".png") for p in plots)
    for p in plots:
        with Image.open(os.path.join(out_dir, "plots", p)) as im:
            assert im.format == "PNG" and im.size[0] > 300
    page = open(os.path.join(out_dir, "report.html"), encoding="utf-8").read()
    assert page.count("data:image/png;base64,") == len(plots)
    return csv


@pytest.mark.slow
def test_sweep_end_to_end_then_a_wider_grid_trains_only_the_new_model(tmp_path, capsys):
    """One cell, then the grid widened to two: the second run trains and measures only
    the new resolution (a cell process and a training each cost a TensorFlow start)."""
    import tensorflow as tf

    grid = write_sweep(tmp_path, ['axis { name: "resolution" values: "64" }'])
    out = str(tmp_path / "out")
    proc = run_sweep("--grid", grid, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "1 cells, 0 already done, 1 to run" in proc.stdout
    assert "training 1 models (0 already trained)" in proc.stdout
    assert "measuring cells" in proc.stderr  # the tqdm bar
    assert "1 cells done, 0 skipped, 0 failed" in proc.stdout
    assert "report:" in proc.stdout
    # two training steps: the model has not learnt the set, and the summary says so
    # instead of putting its mAP on the frontier
    [row] = read_rows(out)
    if row["mAP@.50"] < 0.10:
        assert "not learnt (best mAP@.5 of the model < 0.1" in proc.stdout
        assert "speed/accuracy frontier:" not in proc.stdout
    else:
        assert "speed/accuracy frontier:" in proc.stdout

    [cell] = expected_cells(grid)
    [row] = read_rows(out)
    assert row["cell_id"] == cell.cell_id and row["train_key"] == cell.train_key
    check_outputs(out, 1)
    md = open(os.path.join(out, "results.md"), encoding="utf-8").read()
    assert "| SSD MobileNet v2 x0.25 64px |" in md and "Latency: batch 1" in md
    # the study's findings are checked on every summary; one cell decides none
    assert "## The study's findings on these results" in md and "**not measured**" in md
    assert "the study's findings on these results:" in proc.stdout
    assert row["error"] == "" and row["resolution"] == 64 and not row["speed_only"]
    for key in ("latency_ms", "latency_p90_ms", "latency_nopost_ms", "latency_nopost_p90_ms"):
        assert 0 < row[key] < 60_000, key
    assert row["latency_p90_ms"] >= row["latency_ms"]
    assert row["latency_nopost_p90_ms"] >= row["latency_nopost_ms"]
    assert len(row["latency_runs_ms"]) == 2
    assert row["first_call_s"] > 0 and 100 < row["peak_rss_mb"] < 16_000
    # the host's speed, timed between the runs, and the latency in its units
    assert row["reference_ms"] > 0
    assert 0.3 < row["latency_rel"] * row["reference_ms"] / row["latency_ms"] < 3
    assert row["gflops"] > 0
    # model work: at least the 2 x (first call + 1 warm-up + 2 runs) timed calls and
    # the evaluation; the rest of the cell process's wall time is harness overhead
    assert row["model_work_s"] >= sum(row["latency_runs_ms"]) / 1e3 + row["eval_s"]
    assert row["cell_wall_s"] > row["model_work_s"] > 0
    assert row["harness_overhead_s"] == pytest.approx(row["cell_wall_s"] - row["model_work_s"])
    # the phase breakdown covers the whole cell: its parts sum to the wall time
    phases = {k: v for k, v in row.items() if k.startswith("phase_")}
    assert {
        "phase_process_start_s",
        "phase_imports_s",
        "phase_build_s",
        "phase_restore_s",
        "phase_timing_s",
        "phase_flops_s",
        "phase_evaluation_s",
    } <= set(phases)
    assert all(v >= 0 for v in phases.values())
    assert sum(phases.values()) == pytest.approx(row["cell_wall_s"], rel=1e-6)
    assert row["phase_evaluation_s"] >= row["eval_s"]
    assert "harness overhead per cell" in proc.stdout
    assert 0 <= row["mAP"] <= 1 and 0 <= row["mAP@.50"] <= 1 and row["num_images"] == 4
    assert row["train_steps"] == 2 and row["train_wall_s"] > 0
    assert row["env"]["tf_version"] == tf.__version__ and row["env"]["device"] == "CPU"
    assert "median, p90 and p99 of 2 timed runs" in row["protocol"]
    total, trainable = independent_param_counts(row["test_pipeline"], 64)
    assert (row["params"], row["params_trainable"]) == (total, trainable)
    marker_path = os.path.join(out, "models", cell.train_key, "TRAINED.json")
    marker = json.load(open(marker_path))
    assert marker["step"] == 2 and marker["train_key"] == cell.train_key
    mtime = os.stat(marker_path).st_mtime_ns
    first_line = open(os.path.join(out, "results.jsonl"), encoding="utf-8").readline()

    # --export on the finished sweep: nothing is measured again, the trained cell
    # becomes a SavedModel that serves detections; a second --export is a no-op.
    proc = run_sweep("--grid", grid, "--out", out, "--export")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "1 cells, 1 already done, 0 to run" in proc.stdout
    saved = os.path.join(out, "exports", cell.cell_id, "saved_model", "1")  # TF Serving layout
    assert f"exported SSD MobileNet v2 x0.25 64px: {saved}\n" in proc.stdout
    serve = tf.saved_model.load(saved).signatures["serving_default"]
    image = np.random.default_rng(0).integers(0, 256, (1, 96, 96, 3), dtype=np.uint8)
    out_tensors = serve(input_tensor=tf.constant(image))
    n = int(out_tensors["num_detections"][0])
    assert 0 <= n <= 20  # max_total_detections
    boxes = out_tensors["detection_boxes"].numpy()[0, :n]
    assert ((boxes >= 0) & (boxes <= 1)).all()
    again = run_sweep("--grid", grid, "--out", out, "--export")
    assert again.returncode == 0 and "exported" not in again.stdout
    assert len(read_rows(out)) == 1

    # A wider grid: the plan (dry run) and the run train only the new resolution.
    wider = write_sweep(tmp_path, name="wider.pbtxt")  # resolution 64 and 96
    new = [c for c in expected_cells(wider) if c.values["resolution"] == "96"][0]
    code, plan, _ = in_process(capsys, "--grid", wider, "--out", out, "--dry-run")
    assert code == 0
    assert "2 cells (2 in the grid), 1 already done" in plan
    assert f"  {cell.cell_id}  SSD MobileNet v2 x0.25 64px  (done)" in plan
    assert "1 trained models needed, 1 to train:" in plan
    assert f"  {new.train_key}  SSD MobileNet v2 x0.25 96px  (2 steps, from scratch)" in plan

    proc = run_sweep("--grid", wider, "--out", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "2 cells, 1 already done, 1 to run" in proc.stdout
    assert "training 1 models (0 already trained)" in proc.stdout
    assert os.stat(marker_path).st_mtime_ns == mtime, "the cached model was trained again"
    assert json.load(open(os.path.join(out, "models", new.train_key, "TRAINED.json")))["step"] == 2
    rows = read_rows(out)
    assert [r["cell_id"] for r in rows] == [cell.cell_id, new.cell_id]
    assert open(os.path.join(out, "results.jsonl"), encoding="utf-8").readline() == first_line
    assert rows[1]["error"] == "" and rows[1]["resolution"] == 96 and rows[1]["latency_ms"] > 0
    assert 0 <= rows[1]["mAP"] <= 1 and rows[1]["params"] == row["params"]
    # Convolution FLOPs grow with the input area ((96/64)^2 = 2.25; small maps round up).
    assert 1.5 < rows[1]["gflops"] / row["gflops"] < 3.0
    csv = check_outputs(out, 2)
    assert list(csv["cell_id"]) == [cell.cell_id, new.cell_id]
    # on the frontier only a model that has learnt the set (2 steps rarely do)
    learnt = csv["learnt"].astype(str) == "True"
    assert csv["frontier"].any() == learnt.any()
    assert not (csv["frontier"] & ~learnt).any()


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path, capsys):
    grid = write_sweep(tmp_path)
    out = tmp_path / "out"
    code, plan, err = in_process(capsys, "--grid", grid, "--out", str(out), "--dry-run")
    assert code == 0, err
    cells = expected_cells(grid)
    assert "2 cells (2 in the grid), 0 already done" in plan
    for c in cells:
        assert f"  {c.cell_id}  {c.label}\n" in plan
        assert f"  {c.train_key}  {c.model_label}  (2 steps, from scratch)" in plan
    assert "2 trained models needed, 2 to train:" in plan
    assert not out.exists()

    code, plan, _ = in_process(
        capsys,
        "--grid",
        grid,
        "--out",
        str(out),
        "--dry-run",
        "--speed-only",
        "--filter",
        "resolution=96",
    )
    assert code == 0
    assert "1 cells (2 in the grid)" in plan and "SSD MobileNet v2 x0.25 96px" in plan
    assert "SSD MobileNet v2 x0.25 64px" not in plan and "speed only: nothing is trained" in plan

    # The shipped test grid expands (its pipeline path is relative to the sweep file).
    code, plan, _ = in_process(capsys, "--grid", TINY_SWEEP, "--out", str(out), "--dry-run")
    assert code == 0 and "2 cells (2 in the grid)" in plan


def test_filter_keeps_matching_cells(tmp_path, capsys):
    grid = write_sweep(
        tmp_path,
        [
            'axis { name: "resolution" values: "64" values: "96" }',
            'axis { field: "model.ssd.box_predictor.kernel_size" '
            'values: "1" values: "3" scope: TEST }',
        ],
    )
    args = ("--grid", grid, "--out", str(tmp_path / "out"), "--dry-run")
    code, plan, _ = in_process(capsys, *args)
    assert code == 0 and "4 cells (4 in the grid)" in plan
    code, plan, _ = in_process(capsys, *args, "--filter", "meta_arch=ssd")
    assert "4 cells" in plan
    code, plan, _ = in_process(
        capsys, *args, "--filter", "resolution=64,model.ssd.box_predictor.kernel_size=3"
    )
    assert (
        "1 cells" in plan
        and "SSD MobileNet v2 x0.25 64px, model.ssd.box_predictor.kernel_size=3" in plan
    )
    code, plan, _ = in_process(
        capsys,
        *args,
        "--filter",
        "resolution=64",
        "--filter",
        "resolution=96,model.ssd.box_predictor.kernel_size=1",
    )
    assert "3 cells" in plan
    # keys no axis varies match the value read from the cell's pipeline
    code, plan, _ = in_process(
        capsys, *args, "--filter", "feature_extractor=mobilenet_v2,resolution=96"
    )
    assert "2 cells" in plan


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--filter", "colour=red"],
            "error: --filter: unknown key 'colour'; known: batch_size, "
            "feature_extractor, meta_arch, num_proposals, output_stride, "
            "precision, resolution, runtime, train_output_stride, "
            "train_resolution, train_steps",
        ),
        (["--filter", "resolution"], "error: --filter 'resolution': expected key=value"),
        (["--filter", "resolution=128"], "no cell matches; values in the grid: resolution: 64, 96"),
        (["--train-steps", "0"], "error: --train-steps: 0 is outside 1..10000000"),
        (  # issue 27: was a ValueError traceback (does not fit the proto's int32)
            ["--train-steps", "99999999999"],
            "error: --train-steps: 99999999999 is outside 1..10000000",
        ),
        (["--address", "127.0.0.1:6379"], "error: --address: only with --executor ray"),
        (["--gpus-per-cell", "1"], "error: --gpus-per-cell: only with --executor ray"),
        (["--jobs", "0"], "error: --jobs 0: a positive number, with --executor local only"),
        (
            ["--gpus-per-cell", "-1", "--executor", "ray"],
            "error: --gpus-per-cell: must be 0 or more, got -1",
        ),
        (  # tiny_ssd.pbtxt trains at batch 2: 2 replicas of 1 image would do, 3 cannot
            ["--gpus-per-cell", "3", "--executor", "ray"],
            "train_config.batch_size 2 is not divisible by --gpus-per-cell 3 (one replica",
        ),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path, capsys, extra, message):
    grid = write_sweep(tmp_path)
    code, out, err = in_process(capsys, "--grid", grid, "--out", str(tmp_path / "out"), *extra)
    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'base { pipeline: "tiny_ssd.pbtxt" }\naxis { name: "colour" values: "red" }',
            "axis[0].name: unknown sweep axis 'colour'",
        ),
        (
            'base { pipeline: "tiny_ssd.pbtxt" }\naxis { name: "resolution" }',
            "axis[0].values: empty",
        ),
        ('base { pipeline: "missing.pbtxt" }', "missing.pbtxt"),
        (
            'base { pipeline: "tiny_ssd.pbtxt" }\naxis { name: "resolution" values: "64" ',
            "grid.pbtxt",
        ),
        (
            'base { pipeline: "tiny_ssd.pbtxt" }\naxis { name: "feature_extractor" values: "nonet" }',
            "nonet",
        ),
    ],
)
def test_bad_grids_are_one_line_errors(tmp_path, capsys, text, message):
    (tmp_path / "tiny_ssd.pbtxt").write_text(open(TINY_PIPELINE).read())
    grid = tmp_path / "grid.pbtxt"
    grid.write_text(text + "\n")
    code, out, err = in_process(capsys, "--grid", str(grid), "--out", str(tmp_path / "out"))
    assert code == 2, out + err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err, err


def test_command_line_error_exit_code_and_single_line(tmp_path):
    """The real command (the in-process tests above cover the messages): a missing grid
    file is one line on stderr, exit 2, no traceback."""
    proc = run_sweep("--grid", str(tmp_path / "nope.pbtxt"), timeout=300)
    lines = [l for l in proc.stderr.splitlines() if l.strip() and not _tf_noise(l)]
    assert proc.returncode == 2 and len(lines) == 1 and "nope.pbtxt" in lines[0], proc.stderr


_TF_LOG = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |[IWEF]\d{4} "
    r"|WARNING: All log messages before absl)"
)


def _tf_noise(line):
    """TensorFlow's own start-up log lines (C++ logging, absl) are not our output."""
    return bool(_TF_LOG.match(line))


def _wait_for(predicate, timeout, proc):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_failed_cell_is_a_row_and_a_killed_sweep_resumes(tmp_path):
    """An evaluation set of 0 images passes the grid's validation but leaves the cell
    process nothing to time: that cell is a row with its error, the other one is measured. The
    sweep is stopped (SIGTERM, as a scheduler does) once the first row is written, while
    the second cell runs; the rerun measures only the missing cell."""
    grid = write_sweep(
        tmp_path,
        [
            'axis { name: "resolution" values: "64" }',
            'axis { field: "eval_input_reader.synthetic_shapes.num_images" '
            'values: "4" values: "0" scope: TEST }',
        ],
    )
    out = tmp_path / "out"
    results = out / "results.jsonl"
    cells = expected_cells(grid)
    assert [c.values["eval_input_reader.synthetic_shapes.num_images"] for c in cells] == ["4", "0"]
    cmd = [sys.executable, "benchmark/sweep.py", "--grid", grid, "--out", str(out), "--speed-only"]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=sweep_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert _wait_for(
            lambda: results.exists() and results.read_text().count("\n") >= 1, 400, proc
        ), proc.communicate()
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted: every finished row is kept" in stderr
    # the running cell process goes with it: killed by the sweep, or, when the signal
    # came while the job was being started, by its parent-death signal a moment later
    deadline = time.time() + 15
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.time() < deadline, "a job outlived the sweep by 15 s"
        time.sleep(0.2)
    first = results.read_text()
    rows = read_rows(out)
    assert [r["cell_id"] for r in rows] == [cells[0].cell_id] and rows[0]["error"] == ""

    proc = run_sweep(*cmd[2:])
    # every cell this rerun measured failed: exit 1 (the rows and summary are written)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    assert "2 cells, 1 already done, 1 to run" in proc.stdout
    assert "1 cells done, 0 skipped, 1 failed" in proc.stdout
    assert (
        "failed: SSD MobileNet v2 x0.25 64px, eval_input_reader.synthetic_shapes.num_images=0: "
        in proc.stdout
    )
    text = results.read_text()
    assert text.startswith(first)  # the finished row is byte-identical
    assert len(text.splitlines()) == 2
    good, bad = read_rows(out)
    assert [good["cell_id"], bad["cell_id"]] == [c.cell_id for c in cells]
    assert bad["error"]  # no evaluation image to time: the cell process fails
    assert (
        bad["label"]
        == "SSD MobileNet v2 x0.25 64px, eval_input_reader.synthetic_shapes.num_images=0"
    )
    assert "latency_ms" not in bad and os.path.exists(bad["log"])
    assert good["error"] == "" and good["latency_ms"] > 0 and good["gflops"] > 0
    assert good["speed_only"] and "mAP" not in good and "train_steps" not in good
    csv = check_outputs(str(out), 2)
    assert list(csv["error"].fillna("") != "") == [False, True]
    md = (out / "results.md").read_text()
    assert "Failed cells:" in md and "num_images=0: " in md
    assert not [f for f in os.listdir(out) if f.startswith(".tmp-")]
    assert np.isfinite(csv["latency_ms"].dropna()).all()


def test_sweep_pretrains_each_extractor_once_and_rows_say_so(tmp_path):
    """A tiny pretraining recipe: the phase runs once, every training starts from its
    weights, rows record where the weights came from; a second sweep reuses the cache."""
    grid = write_sweep(tmp_path, pretraining="resolution: 32 steps: 2 batch_size: 4 num_images: 3")
    env_cache = str(tmp_path / "cache")
    out = str(tmp_path / "out")

    def run(*extra):
        return subprocess.run(
            [sys.executable, "benchmark/sweep.py", "--grid", grid, "--out", out, *extra],
            cwd=REPO,
            env=dict(sweep_env(), DETBENCH_CACHE_DIR=env_cache),
            capture_output=True,
            text=True,
            timeout=900,
        )

    proc = run()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pretraining 1 extractors" in proc.stdout
    assert re.search(r"pretrained mobilenet_v2-x0.25-r32-\w+: 2 steps", proc.stderr + proc.stdout)
    rows = read_rows(out)
    assert len(rows) == 2 and all(not r.get("error") for r in rows)
    for r in rows:
        assert r["weights_source"].startswith("synthetic pretraining mobilenet_v2-x0.25-r32-")
        assert r["pretrain_steps"] == 2 and 0 <= r["pretrain_val_accuracy"] <= 1
    cached = os.listdir(os.path.join(env_cache, "pretrained"))
    assert sum(f.endswith(".h5") for f in cached) == 1
    # the trainings' pipelines name the weights by reference, resolved in the cache
    models = os.path.join(out, "models")
    for key in os.listdir(models):
        text = open(os.path.join(models, key, "pipeline.pbtxt"), encoding="utf-8").read()
        assert 'weights_path: "pretrained:mobilenet_v2-x0.25-r32-' in text
    again = run("--no-resume", "--out", str(tmp_path / "out2"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "pretraining" not in again.stdout
