"""Wall-clock timing of tf.functions: first call (tracing) apart, then median / p90 / p99."""

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


def reference_workload():
    """A fixed dense-convolution workload (~1.2 GFLOP, a few ms): how fast the
    machine is right now. Timed between a model's runs, it exposes the host's own
    drift (on a shared VM the same kernel's median moves by 10-30% over a minute)
    and gives a drift-free latency: the model's time in units of this workload's."""
    import tensorflow as tf

    x = tf.random.stateless_normal([1, 64, 64, 128], seed=[1, 2])
    w = tf.random.stateless_normal([3, 3, 128, 128], seed=[3, 4]) * 0.03

    @tf.function
    def run():
        y = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))
        return tf.reduce_sum(tf.nn.conv2d(y, w, 1, "SAME"))

    return run


def time_function(fn, inputs, num_warmup=3, num_runs=20, reference=None):
    """Time ``fn(x)`` cycling over ``inputs`` (a list of tensors).

    Returns seconds: ``first_call`` (the first call, tracing included),
    ``median``, ``p90``, ``p99``, ``mean``, ``runs`` (the timed runs, after warm-up)
    and ``total`` (the whole call: first call, warm-up and timed runs). With
    ``reference`` (a no-argument callable, e.g. ``reference_workload()``), it
    is timed right after each timed run: ``reference_median`` (seconds) and
    ``relative_median``, the median over runs of run / its reference run.
    """
    if not inputs:
        raise ValueError("time_function needs at least one input")
    begin = start = time.perf_counter()
    block(fn(inputs[0]))
    first = time.perf_counter() - start
    for i in range(num_warmup):
        block(fn(inputs[i % len(inputs)]))
    if reference is not None:
        for _ in range(2):
            block(reference())
    runs, ref_runs = [], []
    for i in range(num_runs):
        x = inputs[i % len(inputs)]
        start = time.perf_counter()
        block(fn(x))
        runs.append(time.perf_counter() - start)
        if reference is not None:
            start = time.perf_counter()
            block(reference())
            ref_runs.append(time.perf_counter() - start)
    runs = np.asarray(runs)
    result = {
        "first_call": first,
        "median": float(np.median(runs)),
        "p90": float(np.percentile(runs, 90)),
        "p99": float(np.percentile(runs, 99)),
        "mean": float(runs.mean()),
        "runs": runs.tolist(),
        "total": time.perf_counter() - begin,
    }
    if ref_runs:
        ref_runs = np.asarray(ref_runs)
        result["reference_median"] = float(np.median(ref_runs))
        result["relative_median"] = float(np.median(runs / ref_runs))
    return result


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
