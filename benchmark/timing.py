"""Wall-clock timing of tf.functions: first call (tracing) apart, then median / p90."""
import resource
import time

import numpy as np


def block(result):
    """Force the values to the host so asynchronous work is inside the timing."""
    import tensorflow as tf
    for t in tf.nest.flatten(result):
        if hasattr(t, "numpy"):
            t.numpy()
    return result


def time_function(fn, inputs, num_warmup=3, num_runs=20):
    """Time ``fn(x)`` cycling over ``inputs`` (a list of tensors).

    Returns seconds: ``first_call`` (the first call, tracing included),
    ``median``, ``p90``, ``mean``, ``runs`` (the timed runs, after warm-up)
    and ``total`` (the whole call: first call, warm-up and timed runs).
    """
    if not inputs:
        raise ValueError("time_function needs at least one input")
    begin = start = time.perf_counter()
    block(fn(inputs[0]))
    first = time.perf_counter() - start
    for i in range(num_warmup):
        block(fn(inputs[i % len(inputs)]))
    runs = []
    for i in range(num_runs):
        x = inputs[i % len(inputs)]
        start = time.perf_counter()
        block(fn(x))
        runs.append(time.perf_counter() - start)
    runs = np.asarray(runs)
    return {"first_call": first, "median": float(np.median(runs)),
            "p90": float(np.percentile(runs, 90)), "mean": float(runs.mean()),
            "runs": runs.tolist(), "total": time.perf_counter() - begin}


def peak_rss_mb():
    """Peak resident memory of this process so far (MiB).

    Linux's ``VmHWM`` (this process image's own high-water mark). Not
    ``getrusage``'s ru_maxrss: Linux carries that across ``exec``, so a cell
    started by a larger parent (the sweep, with TensorFlow loaded) would report
    the parent's peak. ru_maxrss (KiB) is the fallback where /proc is missing.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
