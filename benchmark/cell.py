"""One unit of sweep work, run in its own process: ``pretrain`` an extractor, ``train``
a model or ``measure`` a cell.

``python -m detbench.benchmark.cell pretrain|train|measure SPEC.json OUT.json``. The spec
holds the pipelines as text, the model directory and the benchmark settings;
the result (a row, or the training summary) is written atomically to OUT.json.
Running each cell in its own process (a fresh one, or one forked from the fork
server, ``forkserver.py``) makes its peak memory its own and keeps a crash or an
out-of-memory kill to that one cell. A training's spec may carry ``threads``
(``intra_op_threads`` / ``inter_op_threads``): its share of the cores when
several train at once.
"""

import json
import os
import sys
import time
import traceback

DONE_FILE = "TRAINED.json"
_START = time.perf_counter()  # this module's import: the process has started Python


def restart_clock():
    """In a job forked from a process that imported this module (the fork server):
    the job's clock starts now (its 'imports' phase is what it still imports)."""
    global _START
    _START = time.perf_counter()


class _Phases:
    """Wall seconds per phase of a cell (``phase_<name>_s`` in its row), to show
    where the harness overhead goes: the Python start before this module is
    counted by the runner (cell wall time minus the phases' sum)."""

    def __init__(self):
        self.seconds, self._last = {}, time.perf_counter()
        self.seconds["imports"] = self._last - _START

    def mark(self, name):
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def as_row(self):
        return {f"phase_{k}_s": v for k, v in self.seconds.items()}


def _pipeline(text):
    from google.protobuf import text_format

    from detbench.protos import pipeline_pb2

    return text_format.Parse(text, pipeline_pb2.Pipeline())


def _configure_threads(settings):
    import tensorflow as tf

    if settings.get("intra_op_threads"):
        tf.config.threading.set_intra_op_parallelism_threads(settings["intra_op_threads"])
    if settings.get("inter_op_threads"):
        tf.config.threading.set_inter_op_parallelism_threads(settings["inter_op_threads"])


def run_pretraining(spec):
    """Pretrain one extractor into detbench's cache (resuming a killed pretraining)."""
    from google.protobuf import text_format

    from detbench.protos import feature_extractor_pb2
    from detbench.train import pretrain

    _configure_threads(spec.get("threads", {}))
    config = text_format.Parse(spec["extractor"], feature_extractor_pb2.FeatureExtractor())
    recipe = pretrain.Recipe(**spec["recipe"])
    path, report = pretrain.ensure_pretrained(
        config, recipe, progress=False, progress_file=spec.get("progress_file")
    )
    return {"path": path, **{k: report[k] for k in ("steps", "train_seconds", "val_accuracy")}}


def discard_unfinished(model_dir, keep=("pipeline.pbtxt",)):
    """A model folder without DONE_FILE is what a killed training left (its
    checkpoints, logs, maybe a process that went on writing them): remove all but
    ``keep`` so the training starts afresh and its summary covers all of it."""
    import shutil

    if not os.path.isdir(model_dir) or os.path.exists(os.path.join(model_dir, DONE_FILE)):
        return []
    removed = sorted(n for n in os.listdir(model_dir) if n not in keep)
    for name in removed:
        path = os.path.join(model_dir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    if removed:
        print(
            f"{model_dir}: unfinished training (no {DONE_FILE}) discarded: {', '.join(removed)}",
            file=sys.stderr,
        )
    return removed


def run_training(spec):
    """Train from scratch (an unfinished folder is discarded) and mark the model done:
    DONE_FILE is written atomically, last.

    A job given GPUs (``spec["gpus"]``, the ids Ray assigned, the only ones this
    process sees) trains one replica per GPU (``replica_strategy``), whatever
    ``train_config.distribution`` says; otherwise the config's strategy."""
    from detbench.benchmark.results import atomic_write
    from detbench.train.trainer import replica_strategy, train

    _configure_threads(spec.get("threads", {}))
    pipeline = _pipeline(spec["train_pipeline"])
    model_dir = spec["model_dir"]
    discard_unfinished(model_dir)
    strategy = replica_strategy() if spec.get("gpus") else None
    start = time.time()
    result = train(
        pipeline,
        model_dir,
        num_steps=pipeline.train_config.num_steps,
        progress=spec.get("progress", False),
        progress_file=spec.get("progress_file"),
        strategy=strategy,
    )
    summary = {
        "train_key": spec["train_key"],
        "step": int(result.step),
        "train_wall_s": time.time() - start,
        "final_losses": {k: float(v) for k, v in (result.losses or {}).items()},
    }
    if strategy is not None:
        summary.update(gpus=spec["gpus"], replicas=strategy.num_replicas_in_sync)
    atomic_write(os.path.join(model_dir, DONE_FILE), json.dumps(summary, indent=2))
    return summary


def _timing_images(pipeline, count):
    """Real decoded images of the evaluation split (uint8 [1,H,W,3] each)."""
    from detbench.data import build_dataset

    ds = build_dataset(pipeline.eval_input_reader, 1, training=False)
    images = [batch["image"] for batch in ds.take(count)]
    if not images:
        raise ValueError("the evaluation set is empty: no images to time")
    return images


def _parameter_counts(model):
    import numpy as np

    total = int(sum(np.prod(v.shape) for v in model.variables))
    trainable = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    return total, trainable


def run_measure(spec):
    """Time, count and (unless speed-only) evaluate one cell; returns the row."""
    import shutil
    import tempfile

    workdir = tempfile.mkdtemp(prefix="detbench-artifact-")  # the cell's exported artifact
    try:
        return _measure(spec, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _measure(spec, workdir):
    import tensorflow as tf

    from detbench.benchmark import environment, runtimes, timing
    from detbench.benchmark.flops import count_flops
    from detbench.builders.model_builder import build_model

    phases = _Phases()
    settings = spec["settings"]
    _configure_threads(settings)
    pipeline = _pipeline(spec["test_pipeline"])
    deployment = pipeline.deployment
    runtimes.set_precision_policy(deployment)
    # Speed-only cells time random weights, and their post-processing work
    # (how many boxes pass the score threshold into NMS) depends on them: a fixed
    # seed gives every process the same weights, so the same cell does the same work.
    import tf_keras

    tf_keras.utils.set_random_seed(int(settings.get("seed", 0)))
    model = build_model(pipeline.model, is_training=False)
    phases.mark("build")
    images = _timing_images(pipeline, settings.get("num_timing_images", 8))
    phases.mark("timing_images")
    if not spec.get("speed_only"):
        from detbench.evaluation.runner import restore_model

        sample_inputs, sample_shapes = model.preprocess(tf.cast(images[0], tf.float32))
        restore_model(
            model, spec["model_dir"], {"image": sample_inputs, "true_shape": sample_shapes}
        )
        phases.mark("restore")
    # Timing runs send exactly the configured number of proposals.
    if hasattr(model, "benchmark_mode"):
        model.benchmark_mode = True
    xla = bool(settings.get("xla"))
    in_process = deployment.runtime == "tf_function"
    artifact = runtimes.RUNTIMES.get(deployment.runtime)(
        model, pipeline, settings, workdir, None if spec.get("speed_only") else spec["model_dir"]
    )
    phases.mark("export")
    detect = (
        artifact.call if in_process else tf.function(lambda x: model.detect(x), jit_compile=xla)
    )

    def _predict_only(x):
        inputs, shapes = model.preprocess(tf.cast(x, tf.float32))
        return model.predict(inputs, shapes, training=False)

    predict_only = tf.function(_predict_only, jit_compile=xla)
    warm, runs = settings.get("num_warmup", 3), settings.get("num_runs", 20)
    if len({tuple(im.shape) for im in images}) > 1:
        # Each new input shape traces the functions again (e.g. COCO images of
        # different sizes): warm up on every image so no tracing is timed.
        warm = max(warm, len(images))
    full = timing.time_function(
        artifact.call, images, warm, runs, reference=timing.reference_workload()
    )
    work = full["total"]  # seconds spent running the model
    row = {
        "latency_ms": full["median"] * 1e3,
        "latency_p90_ms": full["p90"] * 1e3,
        "latency_p99_ms": full["p99"] * 1e3,
        "first_call_s": full["first_call"],
        "latency_runs_ms": [t * 1e3 for t in full["runs"]],
        "num_warmup": warm,
        "num_runs": runs,
        # the host's speed during the timed runs, and the latency in its units with
        # its 90% interval (benchmark/latency.py): what ranks the cells
        "reference_ms": full["reference_median"] * 1e3,
        "reference_runs_ms": [t * 1e3 for t in full["reference_runs"]],
        "latency_rel": full["relative_median"],
        "latency_rel_lo": full["relative_lo"],
        "latency_rel_hi": full["relative_hi"],
        "artifact_mb": artifact.size_mb,
        **artifact.info,
    }
    # throughput at the cell's batch size (images/s); at batch 1, one over the median
    batch = deployment.batch_size
    if batch > 1:
        batched = timing.time_function(
            artifact.call, [runtimes.batch_of(images, batch)], warm, runs
        )
        row["batch_latency_ms"] = batched["median"] * 1e3
        row["throughput_ips"] = batch / batched["median"]
        work += batched["total"]
    else:
        row["throughput_ips"] = 1.0 / full["median"]
    if in_process:  # what the model itself spends without NMS, and in each stage
        nopost = timing.time_function(predict_only, images, warm, runs)
        row["latency_nopost_ms"] = nopost["median"] * 1e3
        row["latency_nopost_p90_ms"] = nopost["p90"] * 1e3
        work += nopost["total"]
    phases.mark("timing")
    stages = getattr(model, "stage_functions", lambda: [])() if in_process else []
    previous = 0.0
    for name, fn in stages:
        stage = timing.time_function(tf.function(fn, jit_compile=xla), images, warm, runs)
        t, work = stage["median"], work + stage["total"]
        row[f"stage_{name}_ms"] = max(t - previous, 0.0) * 1e3
        previous = t
    if stages:
        row["stage_postprocess_ms"] = max(full["median"] - previous, 0.0) * 1e3
    phases.mark("stage_timing")
    row["peak_rss_mb"] = timing.peak_rss_mb()
    if tf.config.list_physical_devices("GPU"):
        row["gpu_peak_mb"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    row["gflops"] = count_flops(detect, [images[0]]) / 1e9
    phases.mark("flops")
    row["params"], row["params_trainable"] = _parameter_counts(model)
    row["env"] = environment.describe(
        xla, settings.get("intra_op_threads", 0), settings.get("inter_op_threads", 0)
    )
    if hasattr(model, "benchmark_mode"):
        model.benchmark_mode = False
    if not spec.get("speed_only"):
        from detbench.evaluation.runner import evaluate_model

        start = time.perf_counter()
        metrics = evaluate_model(model, pipeline, progress=False, detector=artifact.detector)
        row["eval_s"] = time.perf_counter() - start
        work += row["eval_s"]
        row.update(
            {
                k: (None if isinstance(v, float) and v != v else v)
                for k, v in metrics.items()
                if not isinstance(v, (dict, list))
            }
        )
        if "per_category" in metrics:
            row["per_category_ap"] = metrics["per_category"]
        phases.mark("evaluation")
    row["model_work_s"] = work
    row.update(phases.as_row())
    return row


JOBS = {"pretrain": run_pretraining, "train": run_training, "measure": run_measure}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in JOBS:
        print(
            f"usage: python -m detbench.benchmark.cell {'|'.join(JOBS)} SPEC.json OUT.json",
            file=sys.stderr,
        )
        return 2
    from detbench.benchmark.results import atomic_write

    with open(argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    try:
        result = JOBS[argv[0]](spec)
        result["error"] = ""
    except Exception as e:  # the row records the error; the sweep goes on
        from detbench.errors import DetbenchError

        detail = "" if isinstance(e, DetbenchError) else traceback.format_exc(limit=3)
        print(detail, file=sys.stderr)
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]}
    atomic_write(argv[2], json.dumps(result, default=float))
    return 0 if not result["error"] else 1


if __name__ == "__main__":
    sys.exit(main())
