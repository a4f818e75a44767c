"""The training pair of the Model Garden comparison (``detbench peers --pairs training``).

The same model and batch on both sides, one whole training step each: forward,
target assignment, losses (with the L2 term), gradients and the optimizer
update, each side under ``tf.function`` the way its own trainer runs it.

* The model: the ``retinanet`` pair of ``peers.py`` (our RetinaNet-style SSD
  ResNet-50 FPN P3-P7 with two separate 4-conv towers against the Model
  Garden's ``retinanet_resnetfpn_coco``, 91 class columns) at ``--train-size``
  (default 256 px) instead of 640, built for training: ours by
  ``build_model(is_training=True)``, theirs by ``RetinaNetTask.build_model``
  (their L2 regularizer of weight decay 1e-4 on every kernel).
* The batch: one batch of ``--train-batch`` (default 2) images of our
  synthetic training set, preprocessed by our model (resize, ImageNet
  normalization: the same normalization as theirs, see ``their_inputs``), and
  its groundtruth boxes and classes. Both sides get the same images.
* Ours: the trainer's own step (``train.trainer.make_train_step``: target
  assignment inside the step, focal + smooth-L1 losses, regularization loss,
  backward, update).
* Theirs: ``RetinaNetTask.train_step`` (their trainer's step: forward,
  ``build_losses`` with focal + Huber losses and ``model.losses``, backward,
  update). Their trainer assigns targets in the input pipeline
  (``retinanet_input.Parser``: ``AnchorLabeler.label_anchors`` per image), so
  two functions are timed for them: **theirs** = their anchor labelling of the
  batch's groundtruth + ``train_step`` in one ``tf.function`` (the same work
  as ours: the target), and **theirs without labelling** = ``train_step`` on
  labels computed once beforehand (what their step costs when the labelling
  runs elsewhere; shown for reference).
* Optimizer on both sides: SGD, momentum 0.9, constant learning rate 0.001, no
  gradient clipping; ours from our ``Optimizer`` proto
  (``train.optimizers.build_optimizer``), theirs from their
  ``OptimizerFactory`` (their trainer's path).
* Timing: each function traced and run once (the first step column: trace +
  first run, in this process after the other side's), ``--warmup`` steps, then
  ``--runs`` steps interleaved (alternating the order); median. The weights
  change at every step on both sides; the step's work does not.

Target: our median step time <= 1.0x theirs (with labelling in the step).
"""

import os
import sys

STEP_TARGET = 1.0  # ours / theirs (labels assigned in the step): median step time
LEARNING_RATE, MOMENTUM = 0.001, 0.9


def our_training_model(size, batch):
    """-> (our model built for training, our training step, the batch it trains on)."""
    import tf_keras

    from detbench.builders.model_builder import build_model
    from detbench.config import load_pipeline
    from detbench.studies.peers import CONFIGS, OUR_CONFIGS, ours_overrides
    from detbench.studies.train_step_time import training_batch
    from detbench.train.optimizers import build_optimizer
    from detbench.train.trainer import make_train_step

    overrides = ours_overrides("retinanet", size) + [
        "train_input_reader.synthetic_shapes.num_images=16",  # one batch is used
        f"train_config.optimizer={{momentum {{learning_rate {{constant {{learning_rate: "
        f"{LEARNING_RATE}}}}} momentum: {MOMENTUM}}}}}",
    ]
    pipeline = load_pipeline(os.path.join(CONFIGS, OUR_CONFIGS["retinanet"]), overrides)
    tf_keras.utils.set_random_seed(0)
    model = build_model(pipeline.model, is_training=True)
    first_batch, _ = training_batch(pipeline, model, batch)
    tc = pipeline.train_config
    optimizer, _ = build_optimizer(tc.optimizer, tc.num_steps, gradient_clipping_by_norm=None)
    step = make_train_step(model, optimizer, add_regularization_loss=tc.add_regularization_loss)
    return model, step, first_batch


def their_training_model(size, batch):
    """-> (their model, their task, {"theirs": step with labelling, "theirs without
    labelling": step on precomputed labels}); each step takes our batch dict."""
    import official.vision.configs.retinanet  # noqa: F401  (registers the experiment)
    import tensorflow as tf
    import tf_keras
    from official.core import exp_factory
    from official.modeling.optimization import OptimizerFactory
    from official.vision.ops import anchor
    from official.vision.tasks.retinanet import RetinaNetTask

    from detbench.studies.peers import theirs_config

    tf_keras.utils.set_random_seed(0)
    exp = exp_factory.get_exp_config("retinanet_resnetfpn_coco")
    exp.task.model = theirs_config("retinanet", size)
    task = RetinaNetTask(exp.task)
    model = task.build_model()
    opt = exp.trainer.optimizer_config
    opt.learning_rate.type, opt.learning_rate.constant.learning_rate = "constant", LEARNING_RATE
    opt.warmup.type = None
    opt.optimizer.sgd.momentum = MOMENTUM
    factory = OptimizerFactory(opt)
    optimizer = factory.build_optimizer(factory.build_learning_rate())

    c, parser = exp.task.model, exp.task.train_data.parser
    anchor_boxes = anchor.build_anchor_generator(
        min_level=c.min_level,
        max_level=c.max_level,
        num_scales=c.anchor.num_scales,
        aspect_ratios=c.anchor.aspect_ratios,
        anchor_size=c.anchor.anchor_size,
    )(image_size=(size, size))
    labeler = anchor.AnchorLabeler(parser.match_threshold, parser.unmatched_threshold)

    def labels_of(b):
        """Their parser's labels, per image, of our batch's groundtruth (pixels)."""
        per_image = []
        for i in range(batch):
            n = b["num_groundtruth_boxes"][i]
            boxes = b["groundtruth_boxes"][i, :n] * float(size)
            classes = tf.cast(b["groundtruth_classes"][i, :n, None], tf.int32)
            cls, box, _, cls_w, box_w = labeler.label_anchors(anchor_boxes, boxes, classes)
            per_image.append((cls, box, cls_w, box_w))
        names = ("cls_targets", "box_targets", "cls_weights", "box_weights")
        return {
            name: tf.nest.map_structure(lambda *t: tf.stack(t), *[p[j] for p in per_image])
            for j, name in enumerate(names)
        }

    def step(images, labels):
        return task.train_step((images, labels), model, optimizer)

    with_labelling = tf.function(lambda b: step(b["image"], labels_of(b)))
    labelled = {}  # computed on the first call, outside the timed function

    def without_labelling(b):
        if not labelled:
            labelled["labels"] = tf.function(labels_of)(b)
        return precomputed(b["image"], labelled["labels"])

    precomputed = tf.function(step)
    return model, task, {"theirs": with_labelling, "theirs without labelling": without_labelling}


def training_checks(row):
    """[(target, met)] of the training pair's row (step_ours_s, step_theirs_s); adds
    the ratios to ``row``."""
    row["step_ratio"] = row["step_ours_s"] / row["step_theirs_s"]
    if row.get("step_theirs_unlabelled_s"):
        row["step_ratio_unlabelled"] = row["step_ours_s"] / row["step_theirs_unlabelled_s"]
    return [(f"training step <= {STEP_TARGET}x", row["step_ratio"] <= STEP_TARGET)]


def section_training(args, rows, failures):
    from detbench.studies.peers import _free, interleaved, parameter_count

    size, batch = args.train_size, args.train_batch
    label = f"retinanet training step, {size} px, batch {batch}"
    print(f"[peers] {label}: building both sides ...", file=sys.stderr)
    ours, our_step, our_batch = our_training_model(size, batch)
    theirs, _, their_steps = their_training_model(size, batch)
    print(f"[peers] {label}: interleaved steps ...", file=sys.stderr)
    stats = interleaved({"ours": our_step, **their_steps}, [our_batch], args.runs, args.warmup)
    row = {
        "section": "training",
        "pair": label,
        "size": size,
        "batch": batch,
        "params_ours": parameter_count(ours),
        "params_theirs": parameter_count(theirs),
        "step_ours_s": stats["ours"]["median_s"],
        "step_theirs_s": stats["theirs"]["median_s"],
        "step_theirs_unlabelled_s": stats["theirs without labelling"]["median_s"],
        "step_p90_ours_s": stats["ours"]["p90_s"],
        "step_p90_theirs_s": stats["theirs"]["p90_s"],
        "first_step_ours_s": stats["ours"]["trace_s"],
        "first_step_theirs_s": stats["theirs"]["trace_s"],
    }
    row["checks"] = training_checks(row)
    failures += [f"{label}: {name}" for name, ok in row["checks"] if not ok]
    rows.append(row)
    del ours, theirs, stats, our_step, their_steps
    _free()


def print_training(rows):
    from detbench.studies.peers import params_cell, targets_cell

    print(
        "| pair | params ours / theirs (M) | step ours / theirs (s) | ratio "
        "| theirs without labelling (s) | ratio | p90 ours / theirs (s) "
        "| first step ours / theirs (s) | target |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['pair']} | {params_cell(r)} "
            f"| {r['step_ours_s']:.3f} / {r['step_theirs_s']:.3f} | {r['step_ratio']:.2f} "
            f"| {r['step_theirs_unlabelled_s']:.3f} | {r['step_ratio_unlabelled']:.2f} "
            f"| {r['step_p90_ours_s']:.3f} / {r['step_p90_theirs_s']:.3f} "
            f"| {r['first_step_ours_s']:.1f} / {r['first_step_theirs_s']:.1f} | {targets_cell(r)} |"
        )
