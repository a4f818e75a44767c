"""How a cell runs its model: runtime x precision x batch size (the pipeline's ``deployment``).

``skip_reason`` says why a combination cannot exist (the grid skips it, once
per reason); ``RUNTIMES[name](model, pipeline, settings, workdir)`` builds what a
cell times and evaluates: an ``Artifact`` whose ``call`` takes uint8 images
[B, H, W, 3] (what ``model.detect`` takes) and whose ``detector`` runs the
artifact over the evaluation set (evaluation.runner.evaluate_model).

- ``tf_function``: the model in the cell's process (``fp32``; ``bf16`` on CPUs
  with native bfloat16: Keras' ``mixed_bfloat16`` policy). Its artifact on disk
  is the model's weights as a checkpoint (without the optimizer's state).
- ``saved_model``: the exported SavedModel (export/exporter.py) loaded with
  ``tf.saved_model.load``, its ``serving_default`` signature called (``fp32``).
- ``tflite``: the exported TFLite model (export/tflite.py, SSD only, batch 1) in
  the LiteRT interpreter with XNNPACK, ``intra_op_threads`` threads (default:
  one per core); ``fp32``, ``fp16``, ``int8_dynamic``, ``int8`` (calibrated on
  ``deployment.calibration_images`` training images).
"""

import dataclasses
import os

from detbench.errors import ConfigError
from detbench.registry import Registry

PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8", "bf16")
RUNTIME_PRECISIONS = {
    "tf_function": ("fp32", "bf16"),
    "saved_model": ("fp32",),
    "tflite": ("fp32", "fp16", "int8_dynamic", "int8"),
}
TFLITE_ARCHS = ("ssd",)  # export/tflite.py exports SSDs only
FIXED_BATCH = {"tflite": 1}  # the TFLite export's input has a fixed batch
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether this CPU computes in bfloat16 natively (one of BF16_FLAGS)."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in BF16_FLAGS)
    except OSError:
        pass
    return False


def check_value(axis, value):
    """ConfigError naming the known values when ``value`` is not one of ``axis``'s."""
    known = {"runtime": tuple(RUNTIME_PRECISIONS), "precision": PRECISIONS}.get(axis)
    if known is not None and value not in known:
        raise ConfigError(f"{axis} {value!r}: unknown; known: {', '.join(known)}")
    if axis == "batch_size":
        try:
            ok = int(value) >= 1
        except ValueError:
            ok = False
        if not ok:
            raise ConfigError(f"batch_size {value!r}: a positive whole number")


def skip_reason(meta_arch, deployment, cpuinfo="/proc/cpuinfo"):
    """Why ``deployment`` (a Deployment message) cannot run ``meta_arch``, or None."""
    runtime, precision = deployment.runtime, deployment.precision
    if runtime == "tflite" and meta_arch not in TFLITE_ARCHS:
        return f"runtime tflite: only SSD models export to TFLite, not {meta_arch}"
    if precision not in RUNTIME_PRECISIONS[runtime]:
        return (
            f"precision {precision} on runtime {runtime}: it runs "
            f"{', '.join(RUNTIME_PRECISIONS[runtime])}"
            + (
                ""
                if runtime == "tflite"
                else " (fp16 and int8 weights come from the TFLite converter)"
            )
        )
    if precision == "bf16" and not native_bf16(cpuinfo):
        return (
            f"precision bf16: this CPU has no native bfloat16 (no {' / '.join(BF16_FLAGS)}"
            f" flag in {cpuinfo})"
        )
    if deployment.batch_size > FIXED_BATCH.get(runtime, deployment.batch_size):
        return (
            f"batch_size > {FIXED_BATCH[runtime]} on runtime {runtime}: its export has a "
            f"fixed batch of {FIXED_BATCH[runtime]}"
        )
    return None


def set_precision_policy(deployment):
    """Before the model is built: Keras' mixed_bfloat16 policy for bf16 (tf_function)."""
    if deployment.precision == "bf16":
        import tf_keras

        tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")


def float32_predictions(model):
    """Under mixed_bfloat16 the network's outputs are bfloat16; post-processing (box
    decoding, NMS) and the evaluation take float32: cast the predictions on the way out."""
    import tensorflow as tf

    predict = model.predict

    def predict_float32(*args, **kwargs):
        return {
            k: tf.cast(v, tf.float32) if getattr(v, "dtype", None) == tf.bfloat16 else v
            for k, v in predict(*args, **kwargs).items()
        }

    model.predict = predict_float32
    return model


@dataclasses.dataclass
class Artifact:
    call: object  # uint8 images [B, H, W, 3] -> outputs (timed)
    detector: object  # (image_transform, detect) for evaluate_model; None: the model
    size_mb: float  # on disk (None: nothing on disk)
    info: dict  # extra row columns


def folder_mb(path):
    if os.path.isfile(path):
        return os.path.getsize(path) / 2**20
    return (
        sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
        / 2**20
    )


def weights_mb(model, workdir):
    """What the in-process model ships: its variables alone (``tf.train.Checkpoint(model=
    ...)``, as restore_model reads it) written under ``workdir``, MiB. The training
    checkpoint is not it: it also holds the optimizer's state (Adam: two more copies).
    None while the model has no variables (a speed-only cell builds them on its first call)."""
    import tensorflow as tf

    if not model.variables:
        return None
    prefix = tf.train.Checkpoint(model=model).write(os.path.join(workdir, "weights", "ckpt"))
    folder, name = os.path.split(prefix)
    return (
        sum(
            os.path.getsize(os.path.join(folder, f))
            for f in os.listdir(folder)
            if f.startswith(name + ".")
        )
        / 2**20
    )


RUNTIMES = Registry("runtime")


@RUNTIMES.register("tf_function")
def tf_function_runtime(model, pipeline, settings, workdir, model_dir=None):
    import tensorflow as tf

    if pipeline.deployment.precision == "bf16":
        float32_predictions(model)
    detect = tf.function(lambda x: model.detect(x), jit_compile=bool(settings.get("xla")))
    return Artifact(detect, None, weights_mb(model, workdir), {})


@RUNTIMES.register("saved_model")
def saved_model_runtime(model, pipeline, settings, workdir, model_dir=None):
    import tensorflow as tf

    from detbench.export import exporter

    path = os.path.join(workdir, "saved_model")
    index, _ = exporter.category_index_for(pipeline, exporter._arch(pipeline)[1].num_classes)
    exporter.save_serving_model(model, index, path, label_dir=workdir)
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def call(images):
        return serve(input_tensor=tf.cast(images, tf.uint8))

    def raw(image):
        return image, tf.shape(image)

    return Artifact(call, (raw, lambda images, true_shapes: call(images)), folder_mb(path), {})


def _interpreter(flatbuffer, threads):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # TensorFlow's own copy (deprecated in 2.20, same API)
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
    return interpreter.get_signature_runner("serving_default")


@RUNTIMES.register("tflite")
def tflite_runtime(model, pipeline, settings, workdir, model_dir=None):
    import tensorflow as tf

    from detbench.export import tflite

    deployment = pipeline.deployment
    flatbuffer, flex_ops, info = tflite.convert(
        model, pipeline, deployment.precision, deployment.calibration_images
    )
    path = os.path.join(workdir, "model.tflite")
    with open(path, "wb") as f:
        f.write(flatbuffer)
    threads = int(settings.get("intra_op_threads") or os.cpu_count() or 1)
    runner = _interpreter(flatbuffer, threads)
    height, width = info["input_shape"][1:3]

    def resize(images):  # what the SSD's own preprocess does first: the fixed resize
        return tf.image.resize(tf.cast(images, tf.float32), [height, width]).numpy()

    def call(images):
        return runner(input_tensor=resize(images))

    def fixed(image):
        return (
            tf.image.resize(tf.cast(image, tf.float32), [height, width]),
            tf.constant([height, width, 3]),
        )

    def detect(inputs, true_shapes):
        return runner(input_tensor=inputs.numpy())

    row = {"tflite_threads": threads, "tflite_select_tf_ops": ",".join(flex_ops)}
    if "calibration_images" in info:
        row["calibration_images"] = info["calibration_images"]
    return Artifact(call, (fixed, detect), folder_mb(path), row)


def batch_of(images, n):
    """``n`` images as one uint8 batch [n, H, W, 3], cycling over ``images`` (each
    [1, h, w, 3]) and resizing them to the first one's size."""
    import tensorflow as tf

    height, width = images[0].shape[1:3]
    chosen = [images[i % len(images)] for i in range(n)]
    return tf.concat(
        [
            tf.cast(tf.image.resize(im, [height, width]), tf.uint8)
            if im.shape[1:3] != (height, width)
            else im
            for im in chosen
        ],
        0,
    )
