"""What a number was measured on: recorded with every result row."""
import os
import platform


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _threads(n):
    """TensorFlow reports 0 for its default (one thread per core)."""
    return n if n else f"default ({os.cpu_count()} cores)"


def describe(xla=False, intra_op_threads=0, inter_op_threads=0):
    import tensorflow as tf
    gpus = tf.config.list_physical_devices("GPU")
    gpu_name = ""
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        gpu_name = details.get("device_name", "GPU")
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": gpu_name or "CPU",
        "tf_version": tf.__version__,
        "python": platform.python_version(),
        "xla": bool(xla),
        "intra_op_threads": _threads(intra_op_threads
                                     or tf.config.threading.get_intra_op_parallelism_threads()),
        "inter_op_threads": _threads(inter_op_threads
                                     or tf.config.threading.get_inter_op_parallelism_threads()),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }
