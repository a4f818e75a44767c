"""Pretraining of feature extractors on a synthetic classification task.

The study fine-tuned every detector from an ImageNet-pretrained extractor. No
ImageNet exists here, so an extractor is pretrained on *synthetic shape
classification*: object-centred crops of the synthetic generator's
``pretrain`` split (a seed stream no detection set uses), drawn with all ten
shapes (a detection set uses the first six), each crop labelled with the shape
of the object at its centre. Like ImageNet for COCO, the task teaches the
low-level features (edges, colour contrast, outlines) and shape parts a
detector needs, on images it never sees as a detection set.

    report = pretrain(extractor_config, recipe, out_path)

Weights are written with ``save_weights`` of the extractor's backbone
(``FeatureExtractor.build_backbone``), the file ``feature_extractor.weights_path``
loads. A pretraining is identified by (extractor config, recipe):
``cached_weights`` finds a finished one in detbench's cache or among the files
shipped in ``pretrained/``; a killed pretraining resumes from its last
checkpoint (``<out>.partial/``).
"""

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time

import numpy as np

from detbench.errors import ConfigError, DetbenchError

log = logging.getLogger("detbench.pretrain")

# Bump when the task (crops, labels) changes, so cached weights are not reused.
TASK_VERSION = 1
NUM_SHAPES = 10
SHIPPED_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pretrained"
)
# What the extractor's weights depend on (output stride and FPN do not change them).
EXTRACTOR_FIELDS = ("type", "depth_multiplier", "min_depth")


@dataclasses.dataclass
class Recipe:
    """How an extractor is pretrained. Every field is part of the cache key."""

    resolution: int = 96
    steps: int = 500
    batch_size: int = 32
    learning_rate: float = 0.002  # Adam, cosine decay to 0 after a linear warm-up
    warmup_steps: int = 30
    weight_decay: float = 4e-5
    batch_norm_momentum: float = 0.9
    num_train_images: int = 2400  # generator images; each gives one crop per object
    num_val_images: int = 300
    seed: int = 0
    # The fields the user set (the sweep's pretraining message, the command's flags):
    # an extractor's own recipe changes only the others (recipe_for). Not in the key.
    explicit: tuple = ()

    def key_fields(self):
        # Floats at 6 significant digits: a proto's float32 0.002 is the recipe's 0.002.
        fields = {
            k: float(f"{v:.6g}") if isinstance(v, float) else v
            for k, v in dataclasses.asdict(self).items()
            if k != "explicit"
        }
        return {**fields, "task_version": TASK_VERSION}


# Pretraining message field -> the Recipe fields it sets.
_PROTO_FIELDS = {
    "resolution": ("resolution",),
    "steps": ("steps",),
    "batch_size": ("batch_size",),
    "learning_rate": ("learning_rate",),
    "num_images": ("num_train_images", "num_val_images"),
}


def recipe_from_proto(message):
    """A ``sweep_pb2.Pretraining`` -> Recipe (fields it does not set keep their defaults,
    or take the extractor's own recipe: ``recipe_for``)."""
    return Recipe(
        resolution=message.resolution,
        steps=message.steps,
        batch_size=message.batch_size,
        learning_rate=float(f"{message.learning_rate:.6g}"),
        num_train_images=message.num_images,
        num_val_images=max(1, message.num_images // 8),
        explicit=tuple(
            name
            for field, names in _PROTO_FIELDS.items()
            if message.HasField(field)
            for name in names
        ),
    )


def recipe_for(extractor_config, recipe):
    """``recipe`` as ``extractor_config``'s extractor pretrains: its class's
    ``pretraining_recipe`` (what it needs to learn the task as well as the others) in
    every field the user did not set. An unknown extractor type keeps ``recipe``."""
    import detbench.feature_extractors  # noqa: F401  (registers every family)
    from detbench.feature_extractors.base import FEATURE_EXTRACTORS

    if extractor_config.type not in FEATURE_EXTRACTORS:
        return recipe
    own = FEATURE_EXTRACTORS.get(extractor_config.type).pretraining_recipe
    own = {k: v for k, v in own.items() if k not in recipe.explicit}
    return dataclasses.replace(recipe, **own) if own else recipe


REFERENCE_PREFIX = "pretrained:"


def start_from_pretrained(pipeline, recipe):
    """Point a training pipeline's extractor at the pretrained weights of (its
    extractor, ``recipe``), as ``weights_path: "pretrained:<key>"``, unless it
    already starts from a file (weights_path) or a checkpoint
    (fine_tune_checkpoint). Returns the key or None."""
    from detbench.config.validate import meta_arch_config

    arch = meta_arch_config(pipeline)[1]
    if arch is None or pipeline.train_config.fine_tune_checkpoint:
        return None
    fe = arch.feature_extractor
    if fe.weights_path:
        return None
    key = cache_key(fe, recipe)
    fe.weights_path = REFERENCE_PREFIX + key
    return key


def reference_key(weights_path):
    """``pretrained:<key>`` -> ``<key>``."""
    return weights_path[len(REFERENCE_PREFIX) :]


def resolve_reference(weights_path):
    """``pretrained:<key>`` -> the weights file (cache, then shipped), or None. A cache
    entry whose report is damaged is moved aside (one line says so): it is pretrained
    again."""
    key = reference_key(weights_path)
    for root in (cache_dir(), SHIPPED_DIR):
        path = os.path.join(root, key + ".h5")
        if os.path.exists(path) and os.path.exists(os.path.join(root, key + ".json")):
            problem = _report_problem(path)
            if not problem:
                return path
            if root == SHIPPED_DIR:
                raise DetbenchError(f"{_report_path(path)}: {problem}; restore the shipped file")
            _move_aside(path, problem)
    return None


REPORT_KEYS = ("steps", "val_accuracy", "train_seconds")


def _report_path(weights_file):
    return os.path.splitext(weights_file)[0] + ".json"


def _report_problem(weights_file):
    """Why the report beside a cached weights file cannot be used ('' when it can)."""
    try:
        with open(_report_path(weights_file), encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        return f"damaged pretraining report ({type(e).__name__}: {str(e)[:80]})"
    if not isinstance(report, dict) or any(k not in report for k in REPORT_KEYS):
        return f"damaged pretraining report (not an object with {', '.join(REPORT_KEYS)})"
    return ""


def _move_aside(weights_file, problem):
    """Rename a damaged cache entry's files to ``*.damaged-<time>`` (kept for a look,
    never read again) and say so in one line."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for path in (weights_file, _report_path(weights_file)):
        if os.path.exists(path):
            os.replace(path, f"{path}.damaged-{stamp}")
    print(
        f"warning: {_report_path(weights_file)}: {problem}; cache entry moved aside "
        f"(*.damaged-{stamp}), the extractor is pretrained again",
        file=sys.stderr,
    )


def reference_report(weights_path):
    """The pretraining report (dict) behind a ``pretrained:<key>`` weights_path, or None."""
    path = resolve_reference(weights_path) if weights_path.startswith(REFERENCE_PREFIX) else None
    return _read_report(path) if path else None


def _read_report(weights_file):
    """The JSON report written beside a pretrained weights file (checked by
    ``resolve_reference``)."""
    with open(_report_path(weights_file), encoding="utf-8") as f:
        return json.load(f)


@dataclasses.dataclass
class PretrainReport:
    path: str  # the weights file
    extractor: dict  # EXTRACTOR_FIELDS of the extractor
    recipe: dict
    steps: int
    train_seconds: float
    val_accuracy: float  # top-1 on held-out crops (chance: 1 / NUM_SHAPES)
    train_accuracy: float  # top-1 on the last 10 training batches
    num_train_crops: int
    num_val_crops: int
    resumed_from: int = 0  # the step a killed run's checkpoint restored (0: a fresh run)
    source: str = "pretrained"  # "pretrained" now, "cache" or "shipped" when found

    def summary(self):
        return (
            f"{self.extractor['type']} x{self.extractor['depth_multiplier']:g} pretrained "
            f"{self.steps} steps at {self.recipe['resolution']} px in "
            f"{self.train_seconds / 60:.1f} min: val accuracy {self.val_accuracy:.3f} "
            f"(chance {1 / NUM_SHAPES:.2f}) -> {self.path}"
        )


def extractor_fields(config):
    fields = {
        "type": config.type,
        "depth_multiplier": round(float(config.depth_multiplier), 4),
        "min_depth": int(config.min_depth),
    }
    # another network or input, other weights; unset keeps the keys of the shipped files
    for name in ("stride_placement", "input_normalization"):
        if config.HasField(name):
            fields[name] = (
                config.DESCRIPTOR.fields_by_name[name]
                .enum_type.values_by_number[getattr(config, name)]
                .name
            )
    return fields


def cache_key(extractor_config, recipe):
    """``<type>-x<multiplier>-<hash>``: a stable name for (extractor, the recipe as it
    pretrains: ``recipe_for``)."""
    recipe = recipe_for(extractor_config, recipe)
    fields = {"extractor": extractor_fields(extractor_config), "recipe": recipe.key_fields()}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]
    return (
        f"{extractor_config.type}-x{float(extractor_config.depth_multiplier):g}-"
        f"r{recipe.resolution}-{digest}"
    )


def cache_dir():
    from detbench.data.synthetic import cache_root

    return os.path.join(cache_root(), "pretrained")


def cached_weights(extractor_config, recipe):
    """(path, report dict) of a finished pretraining of this (extractor, recipe) in the
    cache or among the shipped files, else (None, None)."""
    path = resolve_reference(REFERENCE_PREFIX + cache_key(extractor_config, recipe))
    if path is None:
        return None, None
    report = _read_report(path)
    report["source"] = "shipped" if path.startswith(SHIPPED_DIR) else "cache"
    report["path"] = path
    return path, report


# -- data ----------------------------------------------------------------------
def _crops(split_offset, num_images, resolution, seed, rng):
    """Object-centred crops of generator images ``split_offset + i``: (uint8 [N,R,R,3],
    int32 labels in 0..NUM_SHAPES-1)."""
    from PIL import Image

    from detbench.data.synthetic import generate_image

    size = 2 * resolution
    images, labels = [], []
    for i in range(num_images):
        pixels, objects = generate_image(
            seed,
            "pretrain",
            split_offset + i,
            image_size=size,
            num_classes=NUM_SHAPES,
            max_objects=4,
        )
        padded = np.pad(pixels, ((size, size), (size, size), (0, 0)), mode="reflect")
        for obj in objects:
            x, y, w, h = obj["bbox"]
            side = max(w, h)
            if side < 8:
                continue
            crop_side = side * rng.uniform(1.2, 1.8)
            cx = x + w / 2 + rng.uniform(-0.1, 0.1) * side + size
            cy = y + h / 2 + rng.uniform(-0.1, 0.1) * side + size
            box = (
                int(round(cx - crop_side / 2)),
                int(round(cy - crop_side / 2)),
                int(round(cx + crop_side / 2)),
                int(round(cy + crop_side / 2)),
            )
            crop = (
                Image.fromarray(padded).crop(box).resize((resolution, resolution), Image.BILINEAR)
            )
            images.append(np.asarray(crop, np.uint8))
            labels.append(obj["category_id"] - 1)
    return np.stack(images), np.asarray(labels, np.int32)


def classification_set(recipe):
    """(train images, train labels, val images, val labels); val images are generator
    indices no training crop comes from."""
    rng = np.random.default_rng(recipe.seed)
    train = _crops(0, recipe.num_train_images, recipe.resolution, recipe.seed, rng)
    val = _crops(10_000_000, recipe.num_val_images, recipe.resolution, recipe.seed, rng)
    return (*train, *val)


# -- model ---------------------------------------------------------------------
def build_classifier(extractor_config, recipe):
    """(feature extractor, classifier tf_keras.Model: uint8-range images -> logits)."""
    import tf_keras

    from detbench.feature_extractors.base import build_feature_extractor

    config = type(extractor_config)()
    config.CopyFrom(extractor_config)
    config.ClearField("fpn")
    config.ClearField("weights_path")
    config.output_stride = 16
    config.batch_norm_momentum = recipe.batch_norm_momentum
    config.weight_decay = recipe.weight_decay
    extractor = build_feature_extractor(config, is_training=True)
    backbone = extractor.build_backbone()
    inputs = tf_keras.Input((None, None, 3), name="image")
    x = tf_keras.layers.Lambda(extractor.preprocess, name="preprocess")(inputs)
    x = backbone(x)
    x = tf_keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = tf_keras.layers.Dense(NUM_SHAPES, name="logits")(x)
    return extractor, backbone, tf_keras.Model(inputs, logits, name="pretrain_classifier")


def _learning_rate(recipe, step):
    if step < recipe.warmup_steps:
        return recipe.learning_rate * (step + 1) / recipe.warmup_steps
    t = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return 0.5 * recipe.learning_rate * (1 + math.cos(math.pi * min(1.0, t)))


def _augment(images, rng):
    """Random horizontal flips and +-10% brightness, in numpy (float32 out)."""
    flip = rng.random(len(images)) < 0.5
    out = images.astype(np.float32)
    out[flip] = out[flip, :, ::-1]
    out *= rng.uniform(0.9, 1.1, size=(len(images), 1, 1, 1)).astype(np.float32)
    return np.clip(out, 0, 255)


def refresh_batch_norm(model, batches, momentum=0.9):
    """Re-estimate every batch norm layer's moving statistics under the final weights
    (forward passes in training mode, no weight update), as Detectron2's PreciseBN:
    the statistics accumulated while the weights still moved fast do not fit them."""
    import tensorflow as tf

    layers = [m for m in model.submodules if hasattr(m, "moving_mean") and hasattr(m, "momentum")]
    saved = [m.momentum for m in layers]
    for m in layers:
        m.momentum = momentum
    forward = tf.function(lambda x: model(x, training=True))
    try:
        for batch in batches:
            forward(tf.constant(batch, tf.float32))
    finally:
        for m, value in zip(layers, saved):
            m.momentum = value


def _accuracy(classifier, images, labels, batch_size=128):
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = classifier(images[i : i + batch_size].astype(np.float32), training=False)
        correct += int(np.sum(np.argmax(logits.numpy(), axis=1) == labels[i : i + batch_size]))
    return correct / max(1, len(images))


def check_recipe(recipe):
    for field in ("resolution", "steps", "batch_size", "num_train_images", "num_val_images"):
        if getattr(recipe, field) <= 0:
            raise ConfigError(
                f"pretraining {field}: must be positive, got {getattr(recipe, field)}"
            )
    if recipe.resolution < 32:
        raise ConfigError(f"pretraining resolution: must be >= 32, got {recipe.resolution}")
    if not recipe.learning_rate > 0:
        raise ConfigError(
            f"pretraining learning_rate: must be positive, got {recipe.learning_rate}"
        )


def pretrain(
    extractor_config,
    recipe,
    out_path,
    time_budget_s=None,
    progress=True,
    checkpoint_every=50,
    progress_file=None,
):
    """Train ``extractor_config``'s backbone on synthetic shape classification and write
    its weights to ``out_path`` (+ ``.json`` report beside it). Resumes from
    ``out_path + '.partial'`` when a killed run left a checkpoint there.
    ``time_budget_s`` stops early (the report says how many steps ran). The recipe is
    the extractor's (``recipe_for``)."""
    import tensorflow as tf
    import tf_keras
    from tqdm import tqdm

    from detbench.benchmark.results import atomic_write
    from detbench.train.trainer import report_progress

    recipe = recipe_for(extractor_config, recipe)
    check_recipe(recipe)
    out_path = os.path.abspath(out_path)
    if not out_path.endswith(".h5"):
        raise ConfigError(f"--out {out_path}: a pretrained weights file ends in .h5")
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    partial = out_path + ".partial"
    discard_damaged_checkpoint(partial)
    tf.keras.utils.set_random_seed(recipe.seed)
    _, backbone, classifier = build_classifier(extractor_config, recipe)
    start = time.time()
    x_train, y_train, x_val, y_val = classification_set(recipe)
    optimizer = tf_keras.optimizers.Adam(learning_rate=recipe.learning_rate)
    optimizer.build(classifier.trainable_variables)
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False)
    ckpt = tf.train.Checkpoint(model=classifier, optimizer=optimizer, step=step_var)
    manager = tf.train.CheckpointManager(ckpt, partial, max_to_keep=1)
    if manager.latest_checkpoint:
        ckpt.restore(manager.latest_checkpoint).expect_partial()
        log.info("pretraining %s resumed at step %d", out_path, int(step_var.numpy()))
    loss_fn = tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(reduce_retracing=True)
    def train_step(images, labels, lr):
        optimizer.learning_rate.assign(lr)
        with tf.GradientTape() as tape:
            logits = classifier(images, training=True)
            loss = loss_fn(labels, logits)
            reg = tf.add_n(classifier.losses) if classifier.losses else 0.0
            total = loss + reg
        grads = tape.gradient(total, classifier.trainable_variables)
        optimizer.apply_gradients(zip(grads, classifier.trainable_variables))
        hits = tf.reduce_mean(
            tf.cast(tf.equal(tf.argmax(logits, 1, output_type=tf.int32), labels), tf.float32)
        )
        return loss, hits

    rng = np.random.default_rng(recipe.seed + int(step_var.numpy()))
    first = int(step_var.numpy())
    seconds_before = _seconds_so_far(partial)
    loop_start = time.time()
    recent = []
    bar = tqdm(
        total=recipe.steps,
        initial=first,
        disable=not progress,
        dynamic_ncols=True,
        desc=f"pretraining {extractor_config.type}",
        unit="step",
    )
    for step in range(first, recipe.steps):
        if time_budget_s is not None and seconds_before + time.time() - loop_start > time_budget_s:
            break
        idx = rng.integers(0, len(x_train), recipe.batch_size)
        loss, hits = train_step(
            _augment(x_train[idx], rng),
            y_train[idx],
            tf.constant(_learning_rate(recipe, step), tf.float32),
        )
        recent = (recent + [float(hits)])[-10:]
        step_var.assign(step + 1)
        bar.set_postfix_str(f"loss {float(loss):.3f} acc {np.mean(recent):.2f}")
        bar.update(1)
        if progress_file:
            report_progress(
                progress_file,
                step + 1,
                recipe.steps,
                {"loss": float(loss)},
                seconds_before + time.time() - loop_start,
                first_step=first,
                accuracy=float(np.mean(recent)),
            )
        if checkpoint_every and (step + 1) % checkpoint_every == 0 and step + 1 < recipe.steps:
            manager.save()
            _write_seconds(partial, seconds_before + time.time() - loop_start)
    bar.close()
    refresh_batch_norm(
        classifier,
        [
            x_train[i : i + recipe.batch_size].astype(np.float32)
            for i in range(0, min(len(x_train), 30 * recipe.batch_size), recipe.batch_size)
        ],
    )
    steps_done = int(step_var.numpy())
    train_seconds = seconds_before + time.time() - loop_start
    report = PretrainReport(
        path=out_path,
        extractor=extractor_fields(extractor_config),
        recipe=recipe.key_fields(),
        steps=steps_done,
        train_seconds=round(train_seconds, 1),
        val_accuracy=round(_accuracy(classifier, x_val, y_val), 4),
        train_accuracy=round(float(np.mean(recent)) if recent else math.nan, 4),
        num_train_crops=len(x_train),
        num_val_crops=len(x_val),
        resumed_from=first,
    )
    tmp = out_path + ".tmp.h5"
    backbone.save_weights(tmp)
    os.replace(tmp, out_path)
    meta = dataclasses.asdict(report)
    meta["total_seconds"] = round(time.time() - start, 1)
    atomic_write(os.path.splitext(out_path)[0] + ".json", json.dumps(meta, indent=1) + "\n")
    shutil.rmtree(partial, ignore_errors=True)
    return report


def discard_damaged_checkpoint(folder):
    """A killed run's checkpoint in ``folder`` that cannot be read whole (truncated,
    overwritten) is removed, in one line naming it, so the run starts afresh instead of
    failing on every try. Returns True when it was discarded."""
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(folder) if os.path.isdir(folder) else None
    if (
        os.path.isdir(folder)
        and latest is None
        and os.path.exists(os.path.join(folder, "checkpoint"))
    ):
        problem = "its 'checkpoint' file names no readable checkpoint"
    elif latest is None:
        return False
    else:
        try:
            reader = tf.train.load_checkpoint(latest)
            for name in reader.get_variable_to_shape_map():
                reader.get_tensor(name)
            return False
        except Exception as e:  # noqa: BLE001  (a truncated file fails in many ways)
            problem = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
    shutil.rmtree(folder)
    print(
        f"warning: {folder}: damaged pretraining checkpoint ({problem}); discarded, "
        "pretraining starts again",
        file=sys.stderr,
    )
    return True


def _seconds_so_far(partial):
    try:
        with open(os.path.join(partial, "seconds.json"), encoding="utf-8") as f:
            return float(json.load(f)["seconds"])
    except (OSError, ValueError, KeyError):
        return 0.0


def _write_seconds(partial, seconds):
    from detbench.benchmark.results import atomic_write

    atomic_write(os.path.join(partial, "seconds.json"), json.dumps({"seconds": seconds}))


def ensure_pretrained(extractor_config, recipe, progress=True, progress_file=None):
    """The weights file of (extractor, recipe): found in the cache or shipped, else
    pretrained now into the cache. Returns (path, report dict)."""
    path, report = cached_weights(extractor_config, recipe)
    if path:
        return path, report
    out = os.path.join(cache_dir(), cache_key(extractor_config, recipe) + ".h5")
    result = pretrain(extractor_config, recipe, out, progress=progress, progress_file=progress_file)
    return out, dataclasses.asdict(result)
