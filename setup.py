"""Install detbench: the repository root is the package ``detbench``.

The ``.proto`` schema under ``protos/`` is compiled with grpcio-tools' bundled
protoc during the build (``build_py``, also run by ``pip install -e .``); in a
checkout whose generated modules are missing or stale, ``detbench.protos``
compiles them again at import time.
"""

import os
import sys

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


def _compile_protos():
    sys.path.insert(0, os.path.join(HERE, "protos"))
    try:
        import protoc_build  # protos/protoc_build.py: no detbench import needed
    finally:
        sys.path.pop(0)
    protoc_build.compile_protos(os.path.join(HERE, "protos"), force=True)


class BuildPyWithProtos(build_py):
    def run(self):
        _compile_protos()
        super().run()


SUBPACKAGES = [
    "protos",
    "config",
    "core",
    "feature_extractors",
    "meta_arch",
    "builders",
    "data",
    "train",
    "evaluation",
    "export",
    "benchmark",
    "studies",
]

setup(
    name="detbench",
    version="0.1.0",
    description="Speed/accuracy trade-offs of object detectors, measured (Huang et al. 2017)",
    python_requires=">=3.11,<3.14",
    package_dir={"detbench": "."} | {f"detbench.{p}": p for p in SUBPACKAGES},
    packages=["detbench"] + [f"detbench.{p}" for p in SUBPACKAGES],
    package_data={"detbench.protos": ["*.proto"]},
    install_requires=[
        "tensorflow~=2.20.0",
        "tf-keras~=2.20.0",
        "tf-models-official~=2.20.0",
        # grpcio-tools 1.85's protoc emits code that checks protobuf >= 7.35.
        "grpcio-tools>=1.85,<1.86",
        "protobuf>=7.35,<8",
        "pycocotools>=2.0.8",
        "numpy>=1.26",
        "pandas>=2.2",
        "matplotlib>=3.8",
        "Pillow>=10",
        "tqdm>=4.66",
        "psutil>=5.9",
        "PyYAML>=6",  # YOLO data.yaml (data/yolo.py)
        "tensorboard>=2.20,<2.21",  # the sweep's HParams summaries (benchmark/hparams_summary.py)
    ],
    extras_require={
        # ray: tests/benchmark/test_ray_executor.py (about 240 MB, installs in about 1 min).
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "pytest-timeout>=2.3",
            "ray>=2.9",
            "ruff>=0.17,<0.18",
        ],
        "ray": ["ray>=2.9"],
    },
    entry_points={"console_scripts": ["detbench=detbench.cli:console"]},
    cmdclass={"build_py": BuildPyWithProtos},
)
