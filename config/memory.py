"""A rough estimate of the memory a pipeline's training and inference need, to warn
before a run that cannot fit (a 10000 px input died of SIGSEGV at 8 GB, silently).

Activation memory grows with the pixels a step processes: training keeps every
layer's activations for the backward pass. ``TRAIN_BYTES_PER_PIXEL`` is the
order of a ResNet-50-class backbone in float32 (about 100 MB of kept
activations per 224 x 224 image, i.e. ~2 kB per input pixel); inference keeps
only a few layers alive at once (a third of it, taken generously). On top:
TensorFlow's own footprint. An estimate to catch the impossible, not a budget.
"""

from detbench.config.checks import resolved_resizer
from detbench.config.validate import meta_arch_config

TRAIN_BYTES_PER_PIXEL = 2000
INFER_BYTES_PER_PIXEL = 700
RUNTIME_BYTES = 1 << 30  # TensorFlow, the model's code, the data pipeline


def input_side(arch):
    """(height, width) the model's input has at most."""
    r = resolved_resizer(arch)
    if r.WhichOneof("image_resizer") == "fixed_shape":
        return r.fixed_shape.height, r.fixed_shape.width
    side = r.keep_aspect_ratio.max_dimension
    return side, side


def estimate_bytes(pipeline):
    """{'training': bytes, 'inference': bytes}, or {} when the input size is unknown."""
    _, arch = meta_arch_config(pipeline)
    side = input_side(arch) if arch is not None else None
    if not side:
        return {}
    pixels = side[0] * side[1]
    batch = max(pipeline.train_config.batch_size, 1)
    eval_batch = max(pipeline.eval_config.batch_size, 1)
    return {
        "training": RUNTIME_BYTES + batch * pixels * TRAIN_BYTES_PER_PIXEL,
        "inference": RUNTIME_BYTES + eval_batch * pixels * INFER_BYTES_PER_PIXEL,
    }


def machine_bytes():
    import psutil

    return psutil.virtual_memory().total


def memory_warning(pipeline, source, available=None):
    """One line when the estimate exceeds the machine's memory, else None."""
    available = machine_bytes() if available is None else available
    over = {k: v for k, v in estimate_bytes(pipeline).items() if v > available}
    if not over:
        return None
    parts = ", ".join(f"{k} ~{v / 2**30:.1f} GiB" for k, v in over.items())
    return (
        f"warning: {source}: needs roughly {parts} (batch size x input pixels), more "
        f"than this machine's {available / 2**30:.1f} GiB; lower the resolution or "
        "the batch size"
    )
