"""Compile the ``.proto`` files of this folder with grpcio-tools' protoc.

Used by setup.py at install time and by ``detbench.protos`` at import time
when a generated module is missing or older than its ``.proto``.  Imports
nothing from detbench so setup.py can load it before the package exists.
"""

import glob
import os


def stale_protos(proto_dir):
    """The .proto files whose _pb2.py is missing or older than the source."""
    stale = []
    for src in sorted(glob.glob(os.path.join(proto_dir, "*.proto"))):
        gen = src[: -len(".proto")] + "_pb2.py"
        if not os.path.exists(gen) or os.path.getmtime(gen) < os.path.getmtime(src):
            stale.append(src)
    return stale


def compile_protos(proto_dir, force=False):
    """Generate ``*_pb2.py`` beside each ``.proto``; returns the files compiled.

    The protos import each other as ``detbench/protos/x.proto`` so the
    generated modules import ``detbench.protos.x_pb2``; protoc therefore runs
    with an include root where ``detbench/protos`` names this folder.
    """
    import subprocess
    import sys
    import tempfile

    import grpc_tools  # grpcio-tools' bundled protoc

    proto_dir = os.path.abspath(proto_dir)
    sources = sorted(glob.glob(os.path.join(proto_dir, "*.proto")))
    if not force:
        if not stale_protos(proto_dir):
            return []
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "detbench"))
        os.symlink(proto_dir, os.path.join(root, "detbench", "protos"))
        well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        rel = [os.path.join("detbench", "protos", os.path.basename(s)) for s in sources]
        # protoc runs in its own process: grpc_tools' native module and a
        # TensorFlow already loaded in this one can crash each other.
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{well_known}",
                f"--python_out={root}",
            ]
            + rel,
            cwd=root,
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"protoc failed (exit {proc.returncode}) compiling "
                f"{proto_dir}/*.proto: {proc.stderr.strip()}"
            )
    return sources
