"""The sweep: ``python benchmark/sweep.py --grid SWEEP.pbtxt`` (a ``Sweep`` message).

Expands the grid, trains each distinct training configuration once (cached by
its hash under OUT/models/), measures every cell in its own process, appends
each row atomically to OUT/results.jsonl, and writes results.csv, results.md,
plots/*.png and report.html over every cell of the grid measured so far.

Finished cells are never recomputed: a failed cell (a row with its error; the
failed process's stderr in OUT/logs/) is tried again by the next run, and a
cell measured by a --speed-only run is measured again by a full one. Killing
the sweep (Ctrl-C, SIGTERM, SIGKILL) keeps every finished row; the same
command resumes.
"""

import argparse
import contextlib
import json
import os
import signal
import sys
import time

from detbench.errors import ConfigError, run_cli

PROTOCOL_TEXT = (
    "Latency: batch 1, median, p90 and p99 of {runs} timed runs after {warmup} warm-up "
    "runs of preprocess + predict + postprocess (NMS included) on real evaluation "
    "images, in the cell's runtime at its precision; a second column without "
    "post-processing (in-process runtime only). img/s: throughput at the cell's batch "
    "size. MiB on disk: the artifact timed and evaluated. What ranks the cells (frontier, "
    "tables, pick, findings): the drift-corrected latency, each run over a fixed reference "
    "workload timed before and after it (latency_rel, the median of these ratios, with a "
    "90% interval from a bootstrap and the ratio's between-process spread), in ms at the "
    "sweep's median host speed; differences inside the interval are inconclusive. "
    "Memory: peak RSS of the "
    "cell's own process. FLOPs: traced inference graph, multiply-add = 2. "
    "Accuracy: COCO metrics via pycocotools on the evaluation split."
)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="python benchmark/sweep.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  detbench sweep --grid configs/speed_accuracy.pbtxt --dry-run",
    )
    p.add_argument("--grid", required=True, help="a Sweep .pbtxt (protos/sweep.proto)")
    p.add_argument("--out", help="output directory (default: the sweep's out_dir)")
    p.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="training steps per model (overrides the sweep and pipelines)",
    )
    p.add_argument(
        "--speed-only",
        action="store_true",
        help="no training and no accuracy: random weights, fixed proposals",
    )
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        help="keep cells whose axis values match, e.g. 'meta_arch=rfcn' or "
        "'feature_extractor=resnet50_v1,resolution=300' (repeatable: any matches)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the cells and what will be trained"
    )
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=True,
        help="skip finished cells (default)",
    )
    resume.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="measure every cell again (trained models are still reused)",
    )
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument(
        "--jobs",
        type=int,
        default=None,
        metavar="N",
        help="local executor: up to N trainings at once, each with its share of the cores "
        "(default: one per 4 cores); a measured cell always runs alone",
    )
    p.add_argument(
        "--no-fast-path",
        dest="fast_path",
        action="store_false",
        help="local executor: run every job in a fresh Python process instead of forking "
        "it from a process that imported TensorFlow once (rows say which: job_process)",
    )
    p.add_argument("--address", help="Ray cluster address HOST:PORT (with --executor ray)")
    p.add_argument(
        "--gpus-per-cell",
        type=int,
        default=0,
        metavar="N",
        help="with --executor ray: each training and cell asks Ray for N GPUs (and the "
        "node's CPUs in proportion); a training replicates over them (MirroredStrategy), "
        "a row records them in its 'gpus' column",
    )
    from detbench.data.user_data import add_arguments

    add_arguments(p)
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a pipeline field in every cell (after the grid's overrides and "
        "--data; the grid's axes still set their own fields) (repeatable)",
    )
    p.add_argument(
        "--export",
        action="store_true",
        help="export every trained cell's model as a SavedModel under OUT/exports/",
    )
    return p.parse_args(argv)


def parse_filters(filters):
    """['a=1,b=2', 'c=3'] -> [{'a': '1', 'b': '2'}, {'c': '3'}]."""
    out = []
    for f in filters:
        terms = {}
        for term in f.split(","):
            if "=" not in term:
                raise ConfigError(f"--filter {f!r}: expected key=value[,key=value]")
            k, v = term.split("=", 1)
            terms[k.strip()] = v.strip()
        out.append(terms)
    return out


def _filter_values(cell):
    """The cell's axis labels over the values read from its pipelines (so a
    filter on an axis that one part of the grid does not vary still matches)."""
    derived = {
        k: "" if v is None else str(v) for k, v in describe_cell(cell).items() if k in FILTER_KEYS
    }
    derived["train_steps"] = str(cell.train_pipeline.train_config.num_steps)
    return {**derived, **cell.values}


FILTER_KEYS = (
    "meta_arch",
    "variant",
    "feature_extractor",
    "resolution",
    "train_resolution",
    "num_proposals",
    "output_stride",
    "train_output_stride",
    "runtime",
    "precision",
    "batch_size",
    "train_steps",
)


def select(cells, filters):
    if not filters:
        return cells
    values = [_filter_values(c) for c in cells]
    known = set(FILTER_KEYS).union(*values) if cells else set()
    for f in filters:
        for k in f:
            if k not in known:
                raise ConfigError(f"--filter: unknown key {k!r}; known: {', '.join(sorted(known))}")
    kept = [
        c
        for c, v in zip(cells, values)
        if any(all(v.get(k) == x for k, x in f.items()) for f in filters)
    ]
    if not kept:
        keys = sorted({k for f in filters for k in f})
        options = {k: sorted({v[k] for v in values if k in v}) for k in keys}
        given = " / ".join(",".join(f"{k}={v}" for k, v in f.items()) for f in filters)
        listed = "; ".join(f"{k}: {', '.join(v)}" for k, v in options.items())
        raise ConfigError(f"--filter {given}: no cell matches; values in the grid: {listed}")
    return kept


def describe_cell(cell):
    """The row's identifying columns, read from the cell's pipelines."""
    from detbench.config.validate import TWO_STAGE, meta_arch_config, min_resolution

    name, test = meta_arch_config(cell.test_pipeline)
    _, train = meta_arch_config(cell.train_pipeline)
    fe = test.feature_extractor
    return {
        "cell_id": cell.cell_id,
        "train_key": cell.train_key,
        "label": cell.label,
        "model_label": cell.model_label,
        "meta_arch": name,
        "variant": cell.variant,
        "feature_extractor": fe.type,
        "fpn": fe.HasField("fpn"),
        "resolution": min_resolution(test)[0],
        "train_resolution": min_resolution(train)[0],
        "num_proposals": test.rpn.max_proposals if name in TWO_STAGE else None,
        "output_stride": fe.output_stride if name in TWO_STAGE else None,
        "train_output_stride": (
            train.feature_extractor.output_stride if name in TWO_STAGE else None
        ),
        "runtime": cell.test_pipeline.deployment.runtime,
        "precision": cell.test_pipeline.deployment.precision,
        "batch_size": cell.test_pipeline.deployment.batch_size,
        "axis_values": dict(cell.values),
        **weights_source(cell.train_pipeline),
    }


def weights_source(train_pipeline):
    """Where a trained model's weights started: {weights_source, pretrain_*}."""
    from detbench.config.validate import meta_arch_config
    from detbench.train import pretrain

    fe = meta_arch_config(train_pipeline)[1].feature_extractor
    checkpoint = train_pipeline.train_config.fine_tune_checkpoint
    if fe.weights_path.startswith(pretrain.REFERENCE_PREFIX):
        out = {"weights_source": f"synthetic pretraining {pretrain.reference_key(fe.weights_path)}"}
        report = pretrain.reference_report(fe.weights_path)
        if report:
            out.update(
                pretrain_steps=report["steps"],
                pretrain_val_accuracy=report["val_accuracy"],
                pretrain_minutes=round(report["train_seconds"] / 60, 1),
            )
        return out
    if fe.weights_path:
        return {"weights_source": f"file {fe.weights_path}"}
    if checkpoint:
        return {"weights_source": f"checkpoint {checkpoint}"}
    return {"weights_source": "scratch"}


def benchmark_settings(sweep):
    """The sweep's timing settings (warm-up, runs, threads, XLA), as each cell's spec has them."""
    b = sweep.benchmark
    return {
        "num_warmup": b.num_warmup,
        "num_runs": b.num_runs,
        "intra_op_threads": b.intra_op_threads,
        "inter_op_threads": b.inter_op_threads,
        "xla": b.xla,
        "num_timing_images": b.num_timing_images,
    }


def _trained(model_dir):
    from detbench.benchmark.cell import DONE_FILE

    path = os.path.join(model_dir, DONE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def print_plan(grid, cells, out_dir, speed_only, done=()):
    print(
        f"{len(cells)} cells ({len(grid.cells)} in the grid), "
        f"{sum(c.cell_id in done for c in cells)} already done"
    )
    for c in cells:
        print(f"  {c.cell_id}  {c.label}" + ("  (done)" if c.cell_id in done else ""))
    for reason, n in sorted(grid.skipped.items()):
        print(f"skipped {n}: {reason}")
    if speed_only:
        print("speed only: nothing is trained")
        return
    trainings = {}
    for c in cells:
        if c.cell_id not in done:
            trainings.setdefault(c.train_key, c)
    todo = [k for k in trainings if not _trained(os.path.join(out_dir, "models", k))]
    print(f"{len(trainings)} trained models needed, {len(todo)} to train:")
    for k in todo:
        c = trainings[k]
        print(
            f"  {k}  {c.model_label}  ({c.train_pipeline.train_config.num_steps} steps, "
            f"from {weights_source(c.train_pipeline)['weights_source']})"
        )
    from detbench.train import pretrain

    to_pretrain = _pretraining_needed([trainings[k] for k in todo], out_dir)
    if to_pretrain:
        print(
            f"{len(to_pretrain)} extractors to pretrain first:"
            + "".join(f"\n  {pretrain.reference_key(ref)}" for ref in to_pretrain)
        )


def check_executor_args(args):
    """--address / --gpus-per-cell against --executor, before anything is loaded."""
    if args.address and args.executor != "ray":
        raise ConfigError("--address: only with --executor ray")
    if args.gpus_per_cell < 0:
        raise ConfigError(f"--gpus-per-cell: must be 0 or more, got {args.gpus_per_cell}")
    if args.gpus_per_cell and args.executor != "ray":
        raise ConfigError("--gpus-per-cell: only with --executor ray")
    if args.jobs is not None and (args.executor != "local" or args.jobs < 1):
        raise ConfigError(f"--jobs {args.jobs}: a positive number, with --executor local only")


def check_replica_batches(cells, gpus_per_cell, out_dir):
    """A training over N > 1 GPUs gives each replica batch_size / N images: a batch
    that N does not divide (of a model not trained yet) is refused before any work,
    not in each training."""
    if gpus_per_cell < 2:
        return
    for c in cells:
        batch = c.train_pipeline.train_config.batch_size
        if batch % gpus_per_cell and not _trained(os.path.join(out_dir, "models", c.train_key)):
            raise ConfigError(
                f"{c.model_label}: train_config.batch_size {batch} is not divisible by "
                f"--gpus-per-cell {gpus_per_cell} (one replica per GPU)"
            )


def make_executor(args):
    from detbench.benchmark.runner import EXECUTORS, default_jobs

    if args.executor == "ray":
        return EXECUTORS["ray"](args.address, gpus_per_cell=args.gpus_per_cell)
    return EXECUTORS[args.executor](args.jobs or default_jobs(), args.fast_path)


def run_sweep(args):
    from google.protobuf import text_format
    from tqdm import tqdm

    from detbench.benchmark.lock import FolderLock
    from detbench.benchmark.results import ResultsStore, remove_partial_writes
    from detbench.benchmark.runner import cleanup_orphans
    from detbench.config import load_sweep
    from detbench.config.checks import check_train_steps
    from detbench.config.grid import expand_grid

    check_executor_args(args)
    sweep = load_sweep(args.grid)
    if args.train_steps is not None:
        check_train_steps(args.train_steps, "--train-steps", low=1)
        sweep.train_steps = args.train_steps
        for part in sweep.grid:  # the command line wins over every part's own
            part.train_steps = 0
    from detbench.data.user_data import pipeline_adjuster

    adjust, data_note = pipeline_adjuster(args, tuple(args.overrides))
    if data_note:
        print(data_note)
    grid = expand_grid(sweep, args.grid, adjust=adjust)
    cells = select(grid.cells, parse_filters(args.filter))
    if not cells:
        raise ConfigError(f"{args.grid}: no cell left to run (check --filter)")
    # Absolute: jobs may run in another working directory (Ray workers).
    out_dir = os.path.abspath(args.out or sweep.out_dir)
    if not args.speed_only:
        check_replica_batches(cells, args.gpus_per_cell, out_dir)
    # Held until run_sweep returns (or the process ends): a second sweep into the
    # same folder stops with who holds it.
    lock = None if args.dry_run else FolderLock(out_dir)  # noqa: F841
    if not args.dry_run:  # what a killed run left: its jobs, half-written files
        cleanup_orphans()
        remove_partial_writes(out_dir)
    store = ResultsStore(out_dir)
    done = store.done_ids(args.speed_only) if args.resume else set()
    if args.dry_run:
        print_plan(grid, cells, out_dir, args.speed_only, done)
        return 0
    settings = benchmark_settings(sweep)
    todo = [c for c in cells if c.cell_id not in done]
    print(
        f"detbench sweep: {len(cells)} cells, {len(cells) - len(todo)} already done, "
        f"{len(todo)} to run -> {out_dir}"
    )
    executor = make_executor(args)
    train_errors = {}
    if not args.speed_only:
        train_errors = pretrain_extractors(todo, out_dir, executor, grid.pretraining)
        train_errors.update(
            train_models([c for c in todo if c.train_key not in train_errors], out_dir, executor)
        )
    log_dir = os.path.join(out_dir, "logs")
    jobs = []
    for c in todo:
        model_dir = os.path.join(out_dir, "models", c.train_key)
        if c.train_key in train_errors:
            continue
        spec = {
            "test_pipeline": text_format.MessageToString(c.test_pipeline),
            "model_dir": model_dir,
            "settings": settings,
            "speed_only": args.speed_only,
        }
        jobs.append((c.cell_id, "measure", spec))
    by_id = {c.cell_id: c for c in todo}
    for c in todo:
        if c.train_key in train_errors:
            store.add(
                {
                    **describe_cell(c),
                    "error": f"training failed: {train_errors[c.train_key]}",
                    "log": os.path.join(log_dir, f"train-{c.train_key}.log"),
                }
            )
    bar = tqdm(total=len(jobs), desc="measuring cells", unit="cell", dynamic_ncols=True)
    for cid, result in executor.map(jobs):
        cell = by_id[cid]
        row = {
            **describe_cell(cell),
            **result,
            "protocol": PROTOCOL_TEXT.format(
                runs=settings["num_runs"], warmup=settings["num_warmup"]
            ),
            "speed_only": args.speed_only,
            "grid": os.path.abspath(args.grid),
            "test_pipeline": text_format.MessageToString(cell.test_pipeline),
        }
        trained = (
            None if args.speed_only else _trained(os.path.join(out_dir, "models", cell.train_key))
        )
        if trained:
            row["train_steps"] = trained.get("step")
            row["train_wall_s"] = trained.get("train_wall_s")
            if trained.get("replicas"):
                row["train_replicas"] = trained["replicas"]
        tail = row.pop("stderr_tail", None)
        if row.get("error") and tail:
            row["log"] = _write_log(log_dir, f"{cid}.log", tail)
        store.add(row)
        tqdm.write(_cell_line(cell.label, row))
        bar.update(1)
    bar.close()
    getattr(executor, "close", lambda: None)()  # the local fork server
    if args.export and not args.speed_only:
        export_cells(cells, out_dir)
    summarize(store, grid, out_dir, settings, seed_spread(args.grid, sweep.train_steps))
    return _exit_status(store, todo)


def _exit_status(store, todo):
    """1 when every cell this run measured failed (nothing to show for it), else 0."""
    ids = {c.cell_id for c in todo}
    rows = [r for r in store.rows if r.get("cell_id") in ids]
    if rows and all(r.get("error") for r in rows):
        print(f"every cell of this run failed ({len(rows)}); see the errors above", file=sys.stderr)
        return 1
    return 0


def seed_spread(grid_path, train_steps):
    """The grid's stored runs (benchmark/spread.py), or None; says which."""
    from detbench.benchmark import spread

    found, note = spread.load(grid_path, train_steps)
    print(note)
    return found


def _cell_line(label, row):
    """'<label>: 12 ms, mAP 0.412 (mAP@.5 0.701)', with 'not learnt' / 'FAILED' said."""
    from detbench.benchmark.tables import LEARNT_MIN_MAP50

    if row.get("error"):
        return f"{label}: FAILED ({row['error'][:120]})"
    text = f"{label}: {row.get('latency_ms', 0) or 0:.0f} ms"
    if row.get("mAP@.50") is not None:
        text += f", mAP {row['mAP']:.3f} (mAP@.5 {row['mAP@.50']:.3f})"
        if row["mAP@.50"] < LEARNT_MIN_MAP50:
            text += " - not learnt"
    return text


def _write_log(log_dir, name, text):
    """Keep a failed job's stderr tail (its traceback) beside the results."""
    from detbench.benchmark.results import atomic_write

    path = os.path.join(log_dir, name)
    atomic_write(path, text)
    return path


def _pretraining_needed(cells, out_dir):
    """{reference: (extractor config, [train keys])} of the pretrained weights that the
    not-yet-trained models of ``cells`` start from and that are neither cached nor shipped."""
    from detbench.config.validate import meta_arch_config
    from detbench.train import pretrain

    needed = {}
    for c in cells:
        fe = meta_arch_config(c.train_pipeline)[1].feature_extractor
        ref = fe.weights_path
        if not ref.startswith(pretrain.REFERENCE_PREFIX):
            continue
        if _trained(os.path.join(out_dir, "models", c.train_key)):
            continue
        if pretrain.resolve_reference(ref):
            continue
        needed.setdefault(ref, (fe, set()))[1].add(c.train_key)
    return needed


def pretrain_extractors(cells, out_dir, executor, recipe):
    """Pretrain (into detbench's cache) each distinct extractor the trainings start from;
    returns {train_key: error} of the trainings whose pretraining failed."""
    import dataclasses

    from google.protobuf import text_format
    from tqdm import tqdm

    from detbench.benchmark.progress import ChildProgress
    from detbench.train import pretrain

    needed = _pretraining_needed(cells, out_dir)
    if not needed:
        return {}
    print(
        f"pretraining {len(needed)} extractors (synthetic shape classification, "
        f"{recipe.steps} steps at {recipe.resolution} px; cached in {pretrain.cache_dir()})"
        + "".join(f"\n  {pretrain.reference_key(ref)}" for ref in needed)
    )
    progress_dir = os.path.join(out_dir, "logs")
    os.makedirs(progress_dir, exist_ok=True)
    jobs, files = [], {}
    for ref, (fe, _) in needed.items():
        key = pretrain.reference_key(ref)
        config = type(fe)()
        config.CopyFrom(fe)
        config.ClearField("weights_path")
        progress_file = os.path.join(progress_dir, f"pretrain-{key}.progress.json")
        files[progress_file] = f"{fe.type} x{fe.depth_multiplier:g}"
        jobs.append(
            (
                ref,
                "pretrain",
                {
                    "extractor": text_format.MessageToString(config),
                    "recipe": dataclasses.asdict(recipe),
                    "progress_file": progress_file,
                },
            )
        )
    errors = {}
    bar = tqdm(total=len(jobs), desc="pretraining extractors", unit="extractor", dynamic_ncols=True)
    with ChildProgress(bar, files):
        for ref, result in executor.map(jobs):
            key = pretrain.reference_key(ref)
            if result.get("error"):
                _write_log(
                    os.path.join(out_dir, "logs"),
                    f"pretrain-{key}.log",
                    result.get("stderr_tail") or result["error"],
                )
                for train_key in needed[ref][1]:
                    errors[train_key] = f"pretraining {key} failed: {result['error']}"
            else:
                tqdm.write(
                    f"pretrained {key}: {result['steps']} steps in "
                    f"{result['train_seconds'] / 60:.1f} min, validation accuracy "
                    f"{result['val_accuracy']:.3f}"
                )
            bar.update(1)
    bar.close()
    return errors


def train_models(cells, out_dir, executor):
    """Train every distinct training configuration of ``cells`` not yet trained."""
    from google.protobuf import text_format
    from tqdm import tqdm

    needed, cached = {}, set()
    for c in cells:
        model_dir = os.path.join(out_dir, "models", c.train_key)
        if c.train_key in needed or c.train_key in cached:
            continue
        if _trained(model_dir):
            cached.add(c.train_key)
        else:
            needed[c.train_key] = c
    print(
        f"training {len(needed)} models ({len(cached)} already trained)"
        + "".join(f"\n  {k}  {c.model_label}" for k, c in needed.items())
    )
    if not needed:
        return {}
    from detbench.benchmark.progress import ChildProgress

    jobs, files = [], {}
    for key, c in needed.items():
        model_dir = os.path.join(out_dir, "models", key)
        os.makedirs(model_dir, exist_ok=True)
        with open(os.path.join(model_dir, "pipeline.pbtxt"), "w", encoding="utf-8") as f:
            f.write(text_format.MessageToString(c.train_pipeline))
        progress_file = os.path.join(out_dir, "logs", f"train-{key}.progress.json")
        files[progress_file] = c.model_label
        jobs.append(
            (
                key,
                "train",
                {
                    "train_pipeline": text_format.MessageToString(c.train_pipeline),
                    "model_dir": model_dir,
                    "train_key": key,
                    "progress_file": progress_file,
                },
            )
        )
    os.makedirs(os.path.join(out_dir, "logs"), exist_ok=True)
    errors = {}
    bar = tqdm(total=len(jobs), desc="training models", unit="model", dynamic_ncols=True)
    with ChildProgress(bar, files):
        for key, result in executor.map(jobs):
            if result.get("error"):
                errors[key] = result["error"]
                _write_log(
                    os.path.join(out_dir, "logs"),
                    f"train-{key}.log",
                    result.get("stderr_tail") or result["error"],
                )
            tqdm.write(
                f"trained {needed[key].model_label}: "
                + (
                    "FAILED"
                    if result.get("error")
                    else f"{result.get('step')} steps in {result.get('train_wall_s', 0):.0f} s"
                )
            )
            bar.update(1)
    bar.close()
    return errors


def export_cells(cells, out_dir):
    """SavedModels of the trained cells not exported yet; a failed export is reported
    and the others go on (the results are already written)."""
    from detbench.export import export_saved_model

    for c in cells:
        model_dir = os.path.join(out_dir, "models", c.train_key)
        target = os.path.join(out_dir, "exports", c.cell_id)
        if not _trained(model_dir) or os.path.exists(os.path.join(target, "saved_model")):
            continue
        try:
            path = export_saved_model(c.test_pipeline, model_dir, target)
        except Exception as e:  # noqa: BLE001  (one cell's export must not stop the sweep)
            first = (str(e).splitlines() or [""])[0][:300]
            print(f"export failed: {c.label}: {type(e).__name__}: {first}", file=sys.stderr)
            continue
        print(f"exported {c.label}: {path}")


@contextlib.contextmanager
def _summary_file(out_dir, what):
    """A write of the summary that fails (a full disk, a read-only folder) is one line:
    the rows are already in results.jsonl and each file is replaced whole or not at all,
    so the same command, once the cause is gone, finishes the summary."""
    from detbench.errors import DetbenchError

    try:
        yield
    except OSError as e:
        raise DetbenchError(
            f"{out_dir}: could not write {what}: {e.strerror or e}; every finished row is "
            "kept in results.jsonl: free space (or fix the folder) and run the same "
            "command again to finish the summary"
        ) from None


def summarize(store, grid, out_dir, settings, seed_spread=None):
    """Tables, plots and report over every cell of the grid measured so far
    (a --filter run adds its rows to them; rows of cells no longer in the grid
    stay in results.jsonl only). ``seed_spread``: the grid's stored runs
    (benchmark/spread.py), the accuracy noise of the frontier and the findings."""
    from detbench.benchmark import findings as study, hparams_summary, plots, report, tables

    ids = {c.cell_id for c in grid.cells}
    rows = [r for r in store.rows if r["cell_id"] in ids]
    protocol = PROTOCOL_TEXT.format(runs=settings["num_runs"], warmup=settings["num_warmup"])
    checked = study.check_all(tables.to_frame(rows), seed_spread) if rows else []
    with _summary_file(out_dir, "results.csv / results.md"):
        df = tables.write_tables(
            rows,
            out_dir,
            protocol=protocol,
            findings_md=study.markdown(checked) if checked else "",
            seed_spread=seed_spread,
        )
    with _summary_file(out_dir, "the plots (plots/*.png)"):
        paths = plots.write_plots(df, out_dir)
    env = next((r.get("env") for r in rows if r.get("env")), None)
    failed = [r for r in rows if r.get("error")]
    summary = (
        f"{len(rows) - len(failed)} cells done, {sum(grid.skipped.values())} skipped, "
        f"{len(failed)} failed"
    )
    with _summary_file(out_dir, "report.html"):
        page = report.write_report(
            df, list(paths.values()), out_dir, env=env, summary=summary, findings=checked
        )
    print("\n" + summary)
    for reason, n in sorted(grid.skipped.items()):
        print(f"  skipped {n}: {reason}")
    for r in failed:
        print(f"  failed: {r['label']}: {r['error']}")
    overhead = sorted(r["harness_overhead_s"] for r in rows if r.get("harness_overhead_s"))
    if overhead:
        walls = sorted(r["cell_wall_s"] for r in rows if r.get("harness_overhead_s"))
        print(
            f"harness overhead per cell (process start, imports, build, restore, FLOPs "
            f"count; outside model work): median {overhead[len(overhead) // 2]:.1f} s of "
            f"{walls[len(walls) // 2]:.1f} s cell wall time"
        )
    unlearnt = df[df["learnt"].astype(object) == False]  # noqa: E712
    if len(unlearnt):
        print(
            f"not learnt (best mAP@.5 of the model < {tables.LEARNT_MIN_MAP50}; kept off the "
            "frontier and the accuracy plots):"
        )
        for label in sorted(set(unlearnt.get("model_label", unlearnt["label"]).astype(str))):
            print(f"  {label}")
    tcol = tables.time_column(df[df["frontier"]])[0]
    front = df[df["frontier"]].sort_values(tcol)
    if len(front):
        print(
            f"speed/accuracy frontier ({'drift-corrected' if tcol != 'latency_ms' else 'raw'} ms):"
        )
        for _, r in front.iterrows():
            print(f"  {r[tcol]:8.1f} ms  mAP {r['mAP']:.3f}  {r['label']}")
    if checked:
        print("the study's findings on these results:")
        for f in checked:
            print(
                f"  {f.verdict:>15}: {f.claim}\n                   {f.measured}\n"
                f"                   threshold: {f.threshold}"
            )
    print(f"results: {os.path.join(out_dir, 'results.md')}, results.csv, results.jsonl")
    print(f"plots:   {os.path.join(out_dir, 'plots')}/")
    print(f"report:  {page}")
    if rows:
        logdir = hparams_summary.write_hparams(rows, out_dir)
        print(f"tensorboard --logdir {logdir}   (HParams: every cell; training/: the curves)")


class Terminated(BaseException):
    """SIGTERM: stop the sweep. Not a KeyboardInterrupt, for which subprocess.run waits
    only briefly for the child it kills; for this it waits until the cell is gone."""


def _terminate(signum, frame):
    raise Terminated()  # unwinds through subprocess.run, which kills the running cell


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        code = run_sweep(args)
    except (KeyboardInterrupt, Terminated):
        print(
            "\ninterrupted: every finished row is kept in results.jsonl; "
            "run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    print(f"sweep finished in {time.time() - start:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(run_cli(main))
