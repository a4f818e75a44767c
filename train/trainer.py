"""The training loop: one tf.function step under a tf.distribute strategy.

    result = train(pipeline, model_dir)          # -> TrainResult(model, step, losses, wall_time)

- Strategy from ``train_config.distribution``: DEFAULT (one device),
  MIRRORED (``tf.distribute.MirroredStrategy`` over the local devices) or
  MULTI_WORKER (``MultiWorkerMirroredStrategy``, cluster from ``TF_CONFIG``);
  or, whatever the config says, the ``strategy`` given to ``train()``, e.g.
  ``replica_strategy()``: one replica per visible GPU (a sweep's training
  over the GPUs Ray gave it).
  Each replica's loss is scaled by ``1/num_replicas`` and the gradients are
  summed across replicas, so the update equals the single-device one on the
  same global batch (the model's losses being means over its images).
- Loss = sum of ``model.loss(...)`` + ``model.regularization_loss()`` when
  ``add_regularization_loss``.
- Checkpoints (``tf.train.CheckpointManager`` in ``model_dir``) every
  ``checkpoint_every_n_steps`` and at the end; a run with checkpoints in
  ``model_dir`` resumes from the latest (the step counter continues). A fresh
  run with ``fine_tune_checkpoint`` restores the matching variables first.
- TensorBoard scalars in ``model_dir/train`` (losses, learning rate, steps/s)
  and, with ``eval_every_n_steps``, evaluation metrics in ``model_dir/eval``.
- A non-finite loss stops training with ``NonFiniteLossError`` (nothing is saved).
"""

import dataclasses
import json
import logging
import math
import os
import shutil
import time

import tensorflow as tf
import tf_keras
from tqdm import tqdm

from detbench.config.train_checks import check_train_config
from detbench.config.validate import model_num_classes
from detbench.errors import ConfigError, DetbenchError
from detbench.protos import train_pb2
from detbench.train.fine_tune import check_shapes_match, restore_matching_variables
from detbench.train.optimizers import build_optimizer, learning_rate_at

log = logging.getLogger("detbench.train")

GROUNDTRUTH_KEYS = (
    "groundtruth_boxes",
    "groundtruth_classes",
    "groundtruth_is_crowd",
    "num_groundtruth_boxes",
)


class TrainError(DetbenchError):
    """Training cannot go on because of its input (data, checkpoint folder, config)."""


class NonFiniteLossError(TrainError):
    """A loss became NaN or infinite."""

    def __init__(self, step, losses):
        self.step = step
        self.losses = dict(losses)
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        parts = ", ".join(f"{k}={v}" for k, v in bad.items())
        super().__init__(f"training stopped at step {step}: non-finite loss ({parts})")


@dataclasses.dataclass
class TrainResult:
    model: object
    step: int  # the step counter at the end (continues across resumes)
    losses: dict  # the last step's losses (floats); empty if no step ran
    wall_time: float  # seconds spent in this call
    fine_tune: object = None  # FineTuneReport when a fine-tune checkpoint was restored
    eval_metrics: dict = None  # the last periodic evaluation, if any
    # every periodic evaluation of this call: (step, training seconds so far, metrics)
    eval_history: list = dataclasses.field(default_factory=list)
    eval_seconds: float = 0.0  # wall time spent in periodic evaluation (inside wall_time)
    stopped_early: bool = False  # time_budget_s ran out before num_steps


def make_strategy(distribution):
    """``TrainConfig.Distribution`` -> a ``tf.distribute.Strategy``."""
    if distribution == train_pb2.TrainConfig.MIRRORED:
        return tf.distribute.MirroredStrategy()
    if distribution == train_pb2.TrainConfig.MULTI_WORKER:
        if "TF_CONFIG" not in os.environ:
            log.warning("distribution MULTI_WORKER without TF_CONFIG: running as one worker")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()  # the default (one device) strategy


def replica_strategy(devices=None):
    """One replica per device of ``devices`` (default: the visible GPUs, i.e. those
    ``CUDA_VISIBLE_DEVICES`` leaves): ``MirroredStrategy`` over two or more, else the
    default strategy, so training on a CPU or on one GPU is what it was."""
    if devices is None:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
    if len(devices) > 1:
        return tf.distribute.MirroredStrategy(list(devices))
    return tf.distribute.get_strategy()


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def _write_dir(model_dir, strategy, is_chief):
    """Non-chief workers write their (required) checkpoints to a throw-away folder."""
    if is_chief:
        return model_dir
    return os.path.join(model_dir, f".worker_tmp_{strategy.cluster_resolver.task_id}")


def batch_norm_warning(pipeline, num_steps):
    """A warning when batch norm's moving statistics (used at evaluation) will
    still hold more than 10% of their initial values (mean 0, variance 1) at
    the end of a from-scratch run, or None. With the schema's momentum 0.997
    that is any run under ~770 steps: its evaluation then sees nearly
    untrained statistics and gives ~0 mAP however well the model learned."""
    from detbench.config.validate import meta_arch_config

    arch = meta_arch_config(pipeline)[1]
    if arch is None or pipeline.train_config.fine_tune_checkpoint:
        return None
    fe = arch.feature_extractor
    if fe.freeze_batchnorm:
        return None
    left = fe.batch_norm_momentum**num_steps
    if left <= 0.1:
        return None
    return (
        f"feature_extractor.batch_norm_momentum {fe.batch_norm_momentum:g}: after "
        f"{num_steps} steps the moving statistics used at evaluation still hold "
        f"{100 * left:.0f}% of their initial values; for short runs from scratch set "
        f"it to 0.9 (configs/speed_accuracy/ do)"
    )


def _variables_built(model):
    try:
        return bool(model.variables)
    except ValueError:
        return False


def build_training_variables(model, optimizer, strategy):
    """Create the model's and the optimizer's variables under ``strategy``
    (idempotent): before a checkpoint restore, and before the step's
    tf.function, which then traces once (a first call that creates variables
    traces twice)."""
    with strategy.scope():
        model.build_variables()
        optimizer.build(model.trainable_variables)


def make_train_step(
    model, optimizer, strategy=None, add_regularization_loss=True, jit_compile=False
):
    """The training step as one ``tf.function``: batch -> {loss name: value}.

    Forward, ``model.loss`` (+ ``model.regularization_loss()`` when
    ``add_regularization_loss``), backward and the optimizer update, run on
    each replica of ``strategy`` (default: the current one) with its loss
    scaled by 1/replicas; the returned losses are summed over replicas, so
    they are the global batch's. ``total_loss`` is their sum.
    """
    strategy = strategy or tf.distribute.get_strategy()
    scale = 1.0 / strategy.num_replicas_in_sync
    build_training_variables(model, optimizer, strategy)

    def replica_step(batch):
        gt = {k: batch[k] for k in GROUNDTRUTH_KEYS if k in batch}
        with tf.GradientTape() as tape:
            predictions = model.predict(
                batch["image"], batch["true_shape"], training=True, groundtruth=gt
            )
            losses = dict(model.loss(predictions, gt))
            if add_regularization_loss:
                losses["regularization_loss"] = model.regularization_loss()
            losses = {k: tf.cast(v, tf.float32) for k, v in losses.items()}
            total = tf.add_n(list(losses.values()))
            scaled = total * scale
        variables = model.trainable_variables
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        if not pairs:
            raise TrainError("no trainable variable receives a gradient from the loss")
        optimizer.apply_gradients(pairs)
        losses["total_loss"] = total
        return {k: v * scale for k, v in losses.items()}

    @tf.function(jit_compile=jit_compile)
    def step_fn(batch):
        per_replica = strategy.run(replica_step, args=(batch,))
        return {
            k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in per_replica.items()
        }

    return step_fn


class _Trainer:
    def __init__(
        self,
        pipeline,
        model_dir,
        num_steps,
        model,
        dataset,
        progress,
        time_budget_s=None,
        eval_callback=None,
        progress_file=None,
        strategy=None,
    ):
        tc = pipeline.train_config
        if time_budget_s is not None and time_budget_s <= 0:
            raise ConfigError(f"time_budget_s must be > 0, got {time_budget_s}")
        self.time_budget_s, self.eval_callback = time_budget_s, eval_callback
        self.progress_file = progress_file
        self.pipeline, self.tc, self.progress = pipeline, tc, progress
        self.num_steps = tc.num_steps if num_steps is None else int(num_steps)
        check_train_config(tc, self.num_steps)
        self.model_dir = model_dir
        self._eval_writer = None
        warning = batch_norm_warning(pipeline, self.num_steps)
        if warning:
            log.warning(warning)
        tf_keras.utils.set_random_seed(tc.seed)
        self.strategy = strategy or make_strategy(tc.distribution)
        self.replicas = self.strategy.num_replicas_in_sync
        if tc.batch_size % self.replicas:
            raise ConfigError(
                f"train_config.batch_size {tc.batch_size} is not divisible by the "
                f"{self.replicas} replicas (each replica takes batch_size / replicas images)"
            )
        self.is_chief = _is_chief(self.strategy)
        with self.strategy.scope():
            if model is None:
                from detbench.builders.model_builder import build_model

                model = build_model(pipeline.model, is_training=True)
            elif self.replicas > 1 and _variables_built(model):
                if not all(isinstance(v, tf.distribute.DistributedValues) for v in model.variables):
                    raise TrainError(
                        "the model passed to train() was built outside the "
                        "distribution strategy's scope; pass an unbuilt model"
                    )
            self.optimizer, self.schedule = build_optimizer(
                tc.optimizer, self.num_steps, tc.gradient_clipping_by_norm
            )
        self.model = model
        if dataset is None:
            from detbench import data

            dataset = data.build_dataset(
                pipeline.train_input_reader,
                tc.batch_size,
                training=True,
                image_transform=model.preprocess_single,
                seed=tc.seed,
                num_classes=model_num_classes(pipeline, "train"),
            )
        self.dataset = dataset
        self.dist_dataset = self.strategy.experimental_distribute_dataset(dataset)

    # -- steps ---------------------------------------------------------------
    def _next_batch(self):
        try:
            return next(self.iterator)
        except StopIteration:
            self.iterator = iter(self.dist_dataset)  # a finite dataset: start another epoch
            try:
                return next(self.iterator)
            except StopIteration:
                raise TrainError("the training dataset is empty") from None

    def _make_step_fn(self):
        return make_train_step(
            self.model, self.optimizer, self.strategy, self.tc.add_regularization_loss
        )

    # -- the loop ------------------------------------------------------------
    def run(self):
        start_time = time.time()
        tc = self.tc
        write_dir = _write_dir(self.model_dir, self.strategy, self.is_chief)
        self.iterator = iter(self.dist_dataset)
        first = self._next_batch()
        build_training_variables(self.model, self.optimizer, self.strategy)
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        manager = tf.train.CheckpointManager(
            checkpoint,
            write_dir,
            max_to_keep=max(1, tc.max_checkpoints_to_keep),
            step_counter=self.optimizer.iterations,
        )
        fine_tune = None
        latest = tf.train.latest_checkpoint(self.model_dir)
        if latest:
            check_shapes_match(checkpoint, latest, f"model_dir {self.model_dir}: checkpoint")
            status = checkpoint.restore(latest)
            try:
                status.assert_existing_objects_matched()
            except AssertionError as e:
                raise TrainError(
                    f"model_dir {self.model_dir!r}: checkpoint {latest} does not "
                    f"match this model ({str(e).splitlines()[0][:200]})"
                ) from None
            log.info("resumed from %s at step %d", latest, int(self.optimizer.iterations.numpy()))
        elif tc.fine_tune_checkpoint:
            fine_tune = restore_matching_variables(
                self.model, tc.fine_tune_checkpoint, tc.fine_tune_checkpoint_type
            )
        step = int(self.optimizer.iterations.numpy())
        losses = {}
        eval_history, eval_seconds, stopped_early = [], 0.0, False

        def trained_s():  # this call's wall time so far, periodic evaluations excluded
            return time.time() - start_time - eval_seconds

        if step >= self.num_steps:
            log.info(
                "model_dir %s is already at step %d >= num_steps %d",
                self.model_dir,
                step,
                self.num_steps,
            )
            return TrainResult(self.model, step, losses, time.time() - start_time, fine_tune)

        writer = (
            tf.summary.create_file_writer(os.path.join(self.model_dir, "train"))
            if self.is_chief
            else tf.summary.create_noop_writer()
        )
        step_fn = self._make_step_fn()
        log_every = tc.log_every_n_steps or 0
        saved_step = step
        bar = tqdm(
            total=self.num_steps,
            initial=step,
            desc="train",
            unit="step",
            disable=not self.progress,
            dynamic_ncols=True,
        )
        interval_start, interval_steps = time.time(), 0
        batch = first
        try:
            while step < self.num_steps:
                step_start = time.time()
                values = step_fn(batch)
                losses = {k: float(v) for k, v in values.items()}
                step_s = time.time() - step_start
                step += 1
                interval_steps += 1
                if not all(math.isfinite(v) for v in losses.values()):
                    raise NonFiniteLossError(step, losses)
                bar.update(1)
                bar.set_postfix(
                    {k.replace("_loss", ""): f"{v:.4g}" for k, v in losses.items()}, refresh=False
                )
                if self.progress_file:
                    report_progress(
                        self.progress_file,
                        step,
                        self.num_steps,
                        losses,
                        trained_s(),
                        first_step=saved_step,
                    )
                if log_every and (step % log_every == 0 or step == self.num_steps):
                    now = time.time()
                    with writer.as_default(step=step):
                        for name, value in losses.items():
                            tf.summary.scalar(f"loss/{name}", value)
                        # the rate the last update used (the optimizer's step before it)
                        tf.summary.scalar(
                            "learning_rate", learning_rate_at(self.schedule, step - 1)
                        )
                        tf.summary.scalar(
                            "steps_per_sec", interval_steps / max(now - interval_start, 1e-9)
                        )
                    interval_start, interval_steps = now, 0
                if tc.checkpoint_every_n_steps and step % tc.checkpoint_every_n_steps == 0:
                    manager.save(checkpoint_number=step)
                    saved_step = step
                if tc.eval_every_n_steps and step % tc.eval_every_n_steps == 0:
                    eval_start, trained = time.time(), trained_s()
                    metrics = self._evaluate(step)
                    eval_seconds += time.time() - eval_start
                    eval_history.append((step, trained, metrics))
                    if self.eval_callback is not None:
                        self.eval_callback(step, trained, metrics)
                if self.time_budget_s is not None and step < self.num_steps:
                    # stop before a step that would end past the budget (at the
                    # last step's duration)
                    if trained_s() + step_s > self.time_budget_s:
                        stopped_early = True
                        log.info(
                            "time budget of %.0f s reached at step %d", self.time_budget_s, step
                        )
                        break
                if step < self.num_steps:
                    batch = self._next_batch()
        finally:
            bar.close()
            writer.flush()
        if saved_step != step:
            manager.save(checkpoint_number=step)
        if not self.is_chief:
            shutil.rmtree(write_dir, ignore_errors=True)
        return TrainResult(
            self.model,
            step,
            losses,
            time.time() - start_time,
            fine_tune,
            eval_history[-1][2] if eval_history else None,
            eval_history,
            eval_seconds,
            stopped_early,
        )

    def _evaluate(self, step):
        from detbench.evaluation import evaluate_model

        metrics = evaluate_model(self.model, self.pipeline, progress=False)
        if self.is_chief:
            if self._eval_writer is None:
                self._eval_writer = tf.summary.create_file_writer(
                    os.path.join(self.model_dir, "eval")
                )
            with self._eval_writer.as_default(step=step):
                for name, value in metrics.items():
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        tf.summary.scalar(name, value)
            self._eval_writer.flush()
        headline = {k: metrics[k] for k in ("mAP", "mAP@.50", "VOC mAP@.50") if k in metrics}
        log.info("eval at step %d: %s", step, headline)
        return metrics


_last_report = {}


def report_progress(path, step, num_steps, losses, seconds, first_step=0, every_s=2.0, **extra):
    """Write ``{step, num_steps, loss, seconds, eta_s}`` to ``path`` (atomically, at most
    every ``every_s`` seconds and at the last step): what a parent process shows of a
    training it runs in a child (the sweep's progress bar)."""
    now = time.time()
    if step < num_steps and now - _last_report.get(path, 0.0) < every_s:
        return
    _last_report[path] = now
    from detbench.benchmark.results import atomic_write

    done = max(step - first_step, 1)
    total = sum(losses.values()) if losses else None
    atomic_write(
        path,
        json.dumps(
            {
                "step": step,
                "num_steps": num_steps,
                "loss": total,
                "seconds": round(seconds, 1),
                "eta_s": round(seconds / done * (num_steps - step), 1),
                **extra,
            }
        ),
    )


def train(
    pipeline,
    model_dir,
    num_steps=None,
    model=None,
    dataset=None,
    progress=True,
    time_budget_s=None,
    eval_callback=None,
    progress_file=None,
    strategy=None,
):
    """Train ``pipeline``'s model in ``model_dir`` up to ``num_steps`` (default:
    ``train_config.num_steps``), resuming from the latest checkpoint there.

    ``time_budget_s``: stop (and checkpoint) before a step that would bring
    this call's wall time, periodic evaluations excluded, past the budget
    (judged by the last step's duration).
    ``eval_callback(step, training_seconds, metrics)`` is called after each
    periodic evaluation (``train_config.eval_every_n_steps``).
    ``progress_file``: a JSON file kept up to date with the step, loss and time
    left (``report_progress``), for a parent process to show.
    ``strategy``: a ``tf.distribute.Strategy`` to train under instead of
    ``train_config.distribution``'s (e.g. ``replica_strategy()``).

    ``model`` (an unbuilt DetectionModel) and ``dataset`` (batched dicts of the
    data pipeline's layout, 'image' already the model input) may be injected;
    by default they are built from the pipeline. Returns a ``TrainResult``.
    """
    from detbench.paths import check_output_folder

    check_output_folder(model_dir, "model_dir")
    tf.io.gfile.makedirs(model_dir)
    return _Trainer(
        pipeline,
        model_dir,
        num_steps,
        model,
        dataset,
        progress,
        time_budget_s,
        eval_callback,
        progress_file,
        strategy,
    ).run()
