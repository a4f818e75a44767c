"""Grid execution: each training and each cell runs in its own process (locally: a fresh
one, or one forked from the fork server), locally or on Ray."""

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CELL_TIMEOUT_S = 6 * 3600
TEMP_PREFIX = "detbench-cell-"  # + the sweep's pid + "-": whose job it is, from the start
OWNER_FILE = "owner.json"  # in each job's temporary folder: the job's pid
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_LIVE_JOBS = {}  # temporary folder -> pid of the job running in it (any thread's)


def _die_with_parent():
    """In the child, before exec: SIGKILL this process when the process that
    started it dies (Linux), so a killed sweep leaves no job running."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the next run's cleanup ends it
        pass


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def cleanup_orphans(temp_dir=None):
    """End the jobs of sweeps that died (where the parent-death signal is not
    available) and remove their temporary folders; returns the folders removed.

    A job's folder is named with the sweep's pid and records its job's pid; a
    folder whose sweep is gone is an orphan: its job is killed if it still runs
    that folder's spec.
    """
    temp_dir = temp_dir or tempfile.gettempdir()
    removed = []
    try:
        names = [n for n in os.listdir(temp_dir) if n.startswith(TEMP_PREFIX)]
    except OSError:
        return removed
    for name in names:
        folder = os.path.join(temp_dir, name)
        try:
            parent = int(name[len(TEMP_PREFIX) :].split("-")[0])
        except ValueError:
            continue  # not named by this version
        if _alive(parent):
            continue
        try:
            with open(os.path.join(folder, OWNER_FILE), encoding="utf-8") as f:
                child = int(json.load(f)["child"])
        except (OSError, ValueError, KeyError, TypeError):
            child = 0  # killed before its job started
        if child and _alive(child) and folder in _cmdline(child):
            try:
                os.kill(child, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _child_env(gpu_ids=None):
    """The job's environment: this one, with ``TF_USE_LEGACY_KERAS=1`` unless set,
    and ``CUDA_VISIBLE_DEVICES`` set to ``gpu_ids`` when given (the job sees those
    GPUs only; None: whatever this process sees).

    detbench uses tf_keras, never ``tf.keras``; without the variable, importing
    TensorFlow also imports Keras 3 (1.4 s of each job's start on 2 cores).
    """
    env = dict(os.environ)
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    if gpu_ids is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpu_ids)
    return env


def _run_fresh(kind, spec_path, out_path, tmp, timeout, gpu_ids):
    """``python -m detbench.benchmark.cell KIND SPEC OUT`` in a new process; returns
    (exit code, stderr)."""
    cmd = [sys.executable, "-m", "detbench.benchmark.cell", kind, spec_path, out_path]
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_child_env(gpu_ids),
        preexec_fn=_die_with_parent,
    ) as popen:
        _write_owner(tmp, popen.pid)
        try:
            _, stderr = popen.communicate(timeout=timeout)
        except BaseException:  # timeout, Ctrl-C, SIGTERM: the job goes too
            popen.kill()
            popen.wait()
            raise
    return popen.returncode, stderr


def _run_forked(server, kind, spec_path, out_path, tmp, timeout):
    """The same job in a child of the fork server; returns (exit code, its output)."""
    log = os.path.join(tmp, "job.log")
    code = server.run(
        kind, spec_path, out_path, log, timeout, on_start=lambda pid: _write_owner(tmp, pid)
    )
    with open(log, encoding="utf-8", errors="replace") as f:
        return code, f.read()


def run_job(kind, spec, timeout=CELL_TIMEOUT_S, gpu_ids=None, server=None):
    """Run ``python -m detbench.benchmark.cell KIND`` on ``spec``; returns its result dict.
    ``gpu_ids``: the GPUs the job may see (``CUDA_VISIBLE_DEVICES``). ``server``: a
    ``forkserver.ForkServer`` to fork the job from (not with ``gpu_ids``); the row's
    ``job_process`` says which ("fork" or "fresh"), i.e. how its peak memory was taken.

    A crash, a kill (e.g. out of memory) or a timeout becomes ``{"error": ...}``
    with the tail of the process's stderr.
    """
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-") as tmp:
        spec_path, out_path = os.path.join(tmp, "spec.json"), os.path.join(tmp, "out.json")
        with open(spec_path, "w", encoding="utf-8") as f:
            json.dump(spec, f)
        start = time.perf_counter()
        process = "fresh"
        try:
            if server is not None and gpu_ids is None:
                from detbench.benchmark.forkserver import PROCESS_NAME

                process = PROCESS_NAME
                returncode, stderr = _run_forked(server, kind, spec_path, out_path, tmp, timeout)
            else:
                returncode, stderr = _run_fresh(kind, spec_path, out_path, tmp, timeout, gpu_ids)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout} s"}
        except RuntimeError as e:  # the fork server could not run it
            return {"error": f"fork server: {e}"}
        finally:
            _LIVE_JOBS.pop(tmp, None)
        wall = time.perf_counter() - start
        if os.path.exists(out_path):
            with open(out_path, encoding="utf-8") as f:
                result = json.load(f)
            result["cell_wall_s"] = wall
            result["job_process"] = process
            if "model_work_s" in result:  # process start, imports, build, restore, FLOPs
                result["harness_overhead_s"] = wall - result["model_work_s"]
            phases = sum(v for k, v in result.items() if k.startswith("phase_"))
            if phases:  # Python's start (or the fork) and imports, before cell.py runs
                result["phase_process_start_s"] = max(wall - phases, 0.0)
            if result.get("error"):
                result["stderr_tail"] = stderr[-2000:]
            return result
        tail = [l for l in stderr.strip().splitlines() if l.strip()][-1:] or [""]
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        return {
            "error": f"cell process died ({how}): {tail[0][:300]}",
            "stderr_tail": stderr[-2000:],
        }


def _write_owner(folder, child):
    _LIVE_JOBS[folder] = child
    with open(os.path.join(folder, OWNER_FILE), "w", encoding="utf-8") as f:
        json.dump({"child": child}, f)


def machine_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_jobs(cores=None):
    """Trainings at once by default: one per 4 cores (each keeps 4 threads; a
    training's step scales poorly past that on CPU, and each holds its own memory),
    and at least two where there are two cores: on a 2-core machine two trainings on
    one thread each run about as fast as each alone on two (docs/performance.md:
    --jobs 2 took 0.64x the wall time of --jobs 1)."""
    cores = cores or machine_cores()
    return max(min(cores, 2), cores // 4)


UNTIMED = ("pretrain", "train")  # jobs that may share the machine; a "measure" never does


class LocalExecutor:
    """Jobs on this machine: up to ``jobs`` trainings (pretrain / train) at once, each
    with its share of the cores as TensorFlow threads, and every measured cell alone
    (it starts when nothing else runs; nothing starts while it runs). ``fast_path``:
    jobs are forked from a fork server that imported TensorFlow once (``forkserver``);
    False, or where the server cannot start, each job is a fresh process."""

    name = "local"

    def __init__(self, jobs=1, fast_path=True):
        self.jobs, self.fast_path, self.server = max(1, int(jobs)), fast_path, None
        self.threads = max(1, machine_cores() // self.jobs)

    def _server(self):
        if self.fast_path and self.server is None:
            from detbench.benchmark.forkserver import ForkServer

            try:
                self.server = ForkServer(_child_env())
            except (RuntimeError, OSError) as e:
                print(f"fork server unavailable ({e}): fresh processes", file=sys.stderr)
                self.fast_path = False
        return self.server

    def _spec(self, kind, spec):
        if self.jobs > 1 and kind in UNTIMED:
            share = {"intra_op_threads": self.threads, "inter_op_threads": self.threads}
            return {**spec, "threads": share}
        return spec

    def map(self, jobs):
        import queue

        server = self._server()  # from this (the main) thread: see ForkServer
        pending, done, running = list(jobs), queue.Queue(), {}

        def work(key, kind, spec):
            try:
                done.put((key, run_job(kind, self._spec(kind, spec), server=server)))
            except BaseException as e:  # never lose a job's answer
                done.put((key, {"error": f"{type(e).__name__}: {e}"[:500]}))

        try:
            yield from self._schedule(pending, running, done, work)
        except BaseException:  # Ctrl-C, SIGTERM (in this thread): every running job goes
            for pid in list(_LIVE_JOBS.values()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            raise

    def _schedule(self, pending, running, done, work):
        import threading

        while pending or running:
            while pending and not any(k not in UNTIMED for k in running.values()):
                key, kind, spec = pending[0]
                alone = kind not in UNTIMED
                if (alone and running) or len(running) >= self.jobs:
                    break
                pending.pop(0)
                running[key] = kind
                # daemon: a killed sweep does not wait for its jobs' threads to end
                threading.Thread(target=work, args=(key, kind, spec), daemon=True).start()
            key, result = done.get()
            del running[key]
            yield key, result

    def close(self):
        if self.server is not None:
            self.server.close()
            self.server = None


def run_ray_job(kind, spec, gpus_per_cell=0, job=run_job):
    """A Ray task's body (in a Ray worker): ``job(kind, spec)`` (default ``run_job``),
    with ``gpus_per_cell``, on the GPUs Ray assigned to this task.

    Ray sets ``CUDA_VISIBLE_DEVICES`` in the task's own process; the job's child
    process gets it explicitly from ``ray.get_gpu_ids()``, the spec gets them as
    ``gpus`` (a training replicates over them) and the result says where the job
    ran (``gpus``: "0" or "0,1", the node's GPU ids).
    """
    if not gpus_per_cell:
        return job(kind, spec)
    import ray

    gpu_ids = [str(i) for i in ray.get_gpu_ids()]
    result = job(kind, {**spec, "gpus": gpu_ids}, gpu_ids=gpu_ids)
    result["gpus"] = ",".join(gpu_ids)
    return result


class RayExecutor:
    """Jobs as Ray tasks on a cluster (``--address HOST:PORT``; none: a local Ray
    instance is started), one job per task.

    Each task declares the CPUs it needs (``cpus_per_cell``, default: all the
    CPUs of the largest node, so a timed cell never shares its node) and, with
    ``gpus_per_cell`` N > 0, N GPUs: then the default CPUs are the node's CPUs
    in proportion (CPUs x N / GPUs of the node, the least over the nodes with N
    GPUs), so a node runs one cell per N GPUs and no two share a GPU or a CPU,
    and a measured cell left at TensorFlow's default intra-op threads runs with
    that many. Ray schedules tasks on nodes with room, and results are gathered
    here into the same files. Every node runs ``python -m detbench.benchmark.cell``
    with detbench installed, and reads and writes the spec's paths (the sweep's
    output folder, the datasets): on a multi-node cluster they must be on a
    shared filesystem. ``job``: what a task runs (``run_job``).
    """

    name = "ray"

    def __init__(self, address=None, cpus_per_cell=None, gpus_per_cell=0, job=run_job):
        from detbench.errors import DetbenchError

        try:
            import ray
        except ImportError:
            raise DetbenchError("--executor ray needs Ray: pip install -e .[ray]") from None
        self.ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"--address {address}" if address else "a local Ray instance"
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
                raise DetbenchError(f"{where}: cannot start or reach Ray ({first})") from None
        self.gpus_per_cell, self.job = gpus_per_cell, job
        self.cpus = cpus_per_cell or self._cpus_per_task(gpus_per_cell)
        self.remote = ray.remote(num_cpus=self.cpus, num_gpus=gpus_per_cell)(run_ray_job)

    def _cpus_per_task(self, gpus):
        # Per node, not cluster_resources(): that is the sum over nodes, which no
        # single node has, and a task asking for it would never be scheduled.
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        if not gpus:
            return max(1, int(max((n.get("CPU", 0) for n in nodes), default=1)))
        fits = [n for n in nodes if n.get("GPU", 0) >= gpus]
        if not fits:
            from detbench.errors import ConfigError

            most = max((n.get("GPU", 0) for n in nodes), default=0)
            raise ConfigError(
                f"--gpus-per-cell {gpus}: no node of the Ray cluster has {gpus} GPUs "
                f"(the most on one node: {most:g})"
            )
        return max(1, min(int(n.get("CPU", 0) * gpus // n["GPU"]) for n in fits))

    def _task_spec(self, spec):
        """A measured cell sharing its node (GPUs given) runs on its CPU share's threads."""
        settings = spec.get("settings")
        if self.gpus_per_cell and settings is not None and not settings.get("intra_op_threads"):
            return {**spec, "settings": {**settings, "intra_op_threads": self.cpus}}
        return spec

    def map(self, jobs):
        pending = {
            self.remote.remote(kind, self._task_spec(spec), self.gpus_per_cell, self.job): key
            for key, kind, spec in jobs
        }
        while pending:
            done, _ = self.ray.wait(list(pending), num_returns=1)
            for ref in done:
                key = pending.pop(ref)
                try:
                    result = self.ray.get(ref)
                except Exception as e:  # a task that died on its node: its exception
                    # is the last line (the first only names the task, in colour codes)
                    last = ([l for l in str(e).splitlines() if l.strip()] or [type(e).__name__])[-1]
                    result = {"error": f"ray task failed: {last.strip()[:300]}"}
                yield key, result


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}
