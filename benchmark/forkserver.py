"""A fork server for the sweep's jobs: one process imports TensorFlow and detbench
once, then forks a child per job, so a job does not pay Python's start and the
imports again (about 10 s of a cell's 40 s on 2 cores).

``python -m detbench.benchmark.forkserver`` (started by ``ForkServer``) reads one
JSON request per line on stdin (``{"id", "kind", "spec", "out", "log"}``) and
answers on stdout with ``{"id", "pid"}`` when the child is forked and ``{"id",
"returncode"}`` when it ends (negative: killed by that signal, as ``Popen``).

Fork safety: the server only imports. It creates no TensorFlow runtime (no
eager context, hence none of TensorFlow's thread pools) and no Python thread;
it checks both before every fork and refuses to fork otherwise. The native
threads an import leaves are OpenBLAS's pool (numpy's, shut down and restarted
by OpenBLAS's own fork handlers) and jemalloc's background thread (fork-aware);
the child builds its own TensorFlow runtime, with the job's thread settings.

Memory: the child maps the file-backed pages the server's imports had mapped
(``resident_file_pages``: fork copies only the anonymous ones into its page
tables), then resets its peak-RSS mark (``/proc/self/clear_refs`` ``5``: VmHWM :=
current RSS), so its VmHWM is the peak of a process that imported detbench and
ran only this job, as in a fresh process (measured: within a few % of it).
"""

import json
import os
import select
import signal
import sys
import threading
import time

PRELOAD = (
    "numpy",
    "tensorflow",
    "tf_keras",
    "pycocotools.coco",
    "pycocotools.cocoeval",
    "detbench.benchmark.cell",
    "detbench.benchmark.environment",
    "detbench.benchmark.flops",
    "detbench.benchmark.results",
    "detbench.benchmark.runtimes",
    "detbench.benchmark.timing",
    "detbench.builders.model_builder",
    "detbench.data",
    "detbench.evaluation.runner",
    "detbench.train.pretrain",
    "detbench.train.trainer",
)
PROCESS_NAME = "fork"  # the rows' ``job_process`` for jobs run here ("fresh": their own process)


def _preload():
    import importlib

    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception as e:  # the child imports it again and reports the error
            print(f"forkserver: preloading {name} failed: {e}", file=sys.stderr)


def unsafe_to_fork():
    """Why forking now would copy a running runtime into the child ('' when safe)."""
    if threading.active_count() > 1:
        return f"{threading.active_count()} Python threads"
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        from tensorflow.python.eager import context

        if context.context()._context_handle is not None:
            return "TensorFlow's eager context (and its thread pools) already exists"
    return ""


_MADV_POPULATE_READ = 22  # Linux >= 5.14


def resident_file_pages():
    """The runs ``(address, length)`` of file-backed pages (the libraries' code and
    data the imports touched) mapped in this process now, from /proc/self/pagemap.

    A forked child inherits the server's anonymous pages in its page tables (and its
    RSS) but not these: it maps them again only when it touches them. The child maps
    them at once (``map_pages``) so that its RSS starts where a fresh process's is
    after the same imports."""
    import numpy as np

    page, runs = os.sysconf("SC_PAGE_SIZE"), []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            regions = [line.split() for line in maps]
        with open("/proc/self/pagemap", "rb") as pagemap:
            for parts in regions:
                if len(parts) < 6 or not parts[5].startswith("/") or "r" not in parts[1]:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                pagemap.seek(lo // page * 8)
                entries = np.frombuffer(pagemap.read((hi - lo) // page * 8), dtype=np.uint64)
                present = np.concatenate([[0], (entries >> np.uint64(63)).astype(np.int8), [0]])
                edges = np.flatnonzero(np.diff(present))
                pairs = zip(edges[::2].tolist(), edges[1::2].tolist())
                runs += [(lo + a * page, (b - a) * page) for a, b in pairs]
    except OSError:
        return []
    return runs


def map_pages(runs):
    """Map (read-fault) the given runs of file-backed pages into this process."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = os.sysconf("SC_PAGE_SIZE")
    for address, length in runs:
        if libc.madvise(address, length, _MADV_POPULATE_READ) != 0:  # older kernels
            for offset in range(0, length, page):
                ctypes.string_at(address + offset, 1)


def reset_peak_rss():
    """VmHWM := the current RSS (Linux >= 4.0); False where not available."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _reseed():
    """Fresh random states, as a new process would have (not the server's copy)."""
    import random

    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()


def _child(request, server_pid, answers_fd, resident):
    """In the forked child: never returns into the server's loop."""
    code = 1
    try:
        from detbench.benchmark import cell, runner

        os.close(answers_fd)

        runner._die_with_parent()
        if os.getppid() != server_pid:  # the server died before the signal was armed
            os._exit(1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        map_pages(resident)
        reset_peak_rss()
        _reseed()
        cell.restart_clock()
        code = cell.main([request["kind"], request["spec"], request["out"]])
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(requests_fd=0, answers=None):
    answers = answers or sys.stdout
    _preload()
    resident = resident_file_pages()
    why = unsafe_to_fork()
    answers.write(json.dumps({"ready": not why, "why": why, "pid": os.getpid()}) + "\n")
    answers.flush()
    if why:
        return 1
    children, buffer = {}, b""
    while True:
        readable, _, _ = select.select([requests_fd], [], [], 0.1)
        if readable:
            data = os.read(requests_fd, 65536)
            if not data:  # the sweep closed the pipe or died: the children die with us
                return 0
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                request = json.loads(line)
                why = unsafe_to_fork()
                if why:
                    answers.write(json.dumps({"id": request["id"], "refused": why}) + "\n")
                    answers.flush()
                    continue
                server_pid = os.getpid()
                pid = os.fork()
                if pid == 0:
                    _child(request, server_pid, answers.fileno(), resident)
                children[pid] = request["id"]
                answers.write(json.dumps({"id": request["id"], "pid": pid}) + "\n")
                answers.flush()
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            rc = os.waitstatus_to_exitcode(status)
            answers.write(json.dumps({"id": children.pop(pid), "returncode": rc}) + "\n")
            answers.flush()


class _Job:
    def __init__(self):
        self.pid, self.returncode, self.refused = None, None, ""
        self.started, self.done = threading.Event(), threading.Event()


class ForkServer:
    """The sweep's side: starts the server (in the calling thread, whose end its
    parent-death signal follows: start it from the main thread) and runs jobs in
    it, from any thread."""

    def __init__(self, env, start_timeout=600):
        import subprocess
        import tempfile

        from detbench.benchmark.runner import _die_with_parent

        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "detbench.benchmark.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            preexec_fn=_die_with_parent,
        )
        self._lock, self._jobs, self._next, self._dead = threading.Lock(), {}, 0, False
        ready, _, _ = select.select([self.proc.stdout], [], [], start_timeout)
        line = self.proc.stdout.readline() if ready else b""
        hello = json.loads(line) if line.strip() else {}
        if not hello.get("ready"):
            self.close()
            self._log.seek(0)
            tail = self._log.read().decode("utf-8", "replace").strip().splitlines()[-1:]
            raise RuntimeError(hello.get("why") or (tail[0] if tail else "did not start"))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            message = json.loads(line)
            with self._lock:
                job = self._jobs.get(message["id"])
            if job is None:
                continue
            if "pid" in message:
                job.pid = message["pid"]
                job.started.set()
            elif "refused" in message:
                job.refused = message["refused"]
                job.started.set()
                job.done.set()
            else:
                job.returncode = message["returncode"]
                job.done.set()
        with self._lock:  # the server is gone, and its children with it
            self._dead = True
            for job in self._jobs.values():
                job.refused = job.refused or "the fork server died"
                job.started.set()
                job.done.set()

    def run(self, kind, spec_path, out_path, log_path, timeout, on_start=None):
        """Run the job in a forked child; returns its exit code (as ``Popen``'s).
        Raises ``subprocess.TimeoutExpired`` after ``timeout`` seconds (the child
        killed) and ``RuntimeError`` when the server could not run it."""
        import subprocess

        job = _Job()
        with self._lock:
            if self._dead:
                raise RuntimeError("the fork server died")
            self._next += 1
            key = self._next
            self._jobs[key] = job
            request = {"id": key, "kind": kind, "spec": spec_path, "out": out_path}
            try:
                self.proc.stdin.write((json.dumps({**request, "log": log_path}) + "\n").encode())
                self.proc.stdin.flush()
            except OSError as e:
                del self._jobs[key]
                raise RuntimeError(f"the fork server died ({e})") from None
        deadline = time.monotonic() + timeout
        try:
            job.started.wait()
            if job.pid is not None and on_start:
                on_start(job.pid)
            if not job.done.wait(max(deadline - time.monotonic(), 0)):
                raise subprocess.TimeoutExpired(kind, timeout)
        except BaseException:  # timeout, Ctrl-C, SIGTERM: the job goes too
            if job.pid is not None and not job.done.is_set():
                try:
                    os.kill(job.pid, signal.SIGKILL)
                except OSError:
                    pass
                job.done.wait(10)
            raise
        finally:
            with self._lock:
                self._jobs.pop(key, None)
        if job.returncode is None:
            raise RuntimeError(job.refused or "the fork server died")
        return job.returncode

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    # stdout is the answers' pipe: anything printed while importing goes to stderr
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.exit(serve(0, answers))
