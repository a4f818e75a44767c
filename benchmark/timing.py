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
    and ``total`` (the whole call: first call, warm-up and timed runs).

    With ``reference`` (a no-argument callable, e.g. ``reference_workload()``),
    the reference is timed once before the first timed run and right after each
    one, so each run is bracketed by two reference runs: ``reference_runs``,
    ``reference_median`` (seconds), ``relative_runs`` (each run over the mean of
    its two brackets: the run in units of the host's speed at that moment) and
    their median ``relative_median`` with its bootstrap interval
    (``benchmark.latency.relative_interval``).
    """
    if not inputs:
        raise ValueError("time_function needs at least one input")
    if num_runs < 1:
        raise ValueError(f"time_function needs at least one timed run, got num_runs={num_runs}")
    begin = start = time.perf_counter()
    block(fn(inputs[0]))
    first = time.perf_counter() - start
    for i in range(num_warmup):
        block(fn(inputs[i % len(inputs)]))

    def timed(f, *args):
        t0 = time.perf_counter()
        block(f(*args))
        return time.perf_counter() - t0

    ref_runs = []
    if reference is not None:
        block(reference())  # its own warm-up
        ref_runs.append(timed(reference))
    runs = []
    for i in range(num_runs):
        runs.append(timed(fn, inputs[i % len(inputs)]))
        if reference is not None:
            ref_runs.append(timed(reference))
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
        from detbench.benchmark import latency

        ref_runs = np.asarray(ref_runs)
        relative = latency.bracketed_ratios(runs, ref_runs)
        lo, hi = latency.relative_interval(relative)
        result.update(
            reference_runs=ref_runs.tolist(),
            reference_median=float(np.median(ref_runs)),
            relative_runs=relative.tolist(),
            relative_median=float(np.median(relative)),
            relative_lo=lo,
            relative_hi=hi,
        )
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
