"""What a number was measured on: recorded with every result row."""

import math
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


def litert_version():
    """The LiteRT (ai_edge_litert) package's version, or "not installed"."""
    from importlib import metadata

    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return "not installed"


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
        "litert_version": litert_version(),
        "python": platform.python_version(),
        "xla": bool(xla),
        "intra_op_threads": _threads(
            intra_op_threads or tf.config.threading.get_intra_op_parallelism_threads()
        ),
        "inter_op_threads": _threads(
            inter_op_threads or tf.config.threading.get_inter_op_parallelism_threads()
        ),
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
    }


def _values(df, column, default=None):
    """The distinct values of ``column`` (in first-seen order), ``default`` for rows without."""
    if column not in df.columns:
        return [default] if default is not None else []
    seen = []
    for v in df[column]:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            v = default
        if v is not None and str(v) not in seen:
            seen.append(str(v))
    return seen


def measured_on(df):
    """One line saying where a table's numbers were measured (a plot's footer, the
    report's header): CPU model and cores, GPU, TensorFlow and LiteRT versions,
    threads, runtimes and precisions; several values of a field are listed."""

    def field(column, default=None):
        return ", ".join(_values(df, column, default)) or "unknown"

    gpu = [d for d in _values(df, "env_device") if d != "CPU"]
    return (
        f"measured on: CPU {field('env_cpu_model')} ({field('env_cpu_count')} cores); "
        f"GPU {', '.join(gpu) or 'none'}; TensorFlow {field('env_tf_version')}; "
        f"LiteRT {field('env_litert_version')}; threads intra {field('env_intra_op_threads')}"
        f" / inter {field('env_inter_op_threads')}; runtime {field('runtime', 'tf_function')};"
        f" precision {field('precision', 'fp32')}"
    )
