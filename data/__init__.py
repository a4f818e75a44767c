"""Input pipelines: synthetic shapes, COCO JSON and TFRecord sources, augmentation.

``build_dataset``, ``load_dataset_info`` and ``DatasetInfo`` (data/dataset.py)
are the public entry points; they are imported lazily so that the synthetic
generator's command line does not pay for importing TensorFlow.
"""

from detbench.data.errors import DataError

__all__ = [
    "build_dataset",
    "load_dataset_info",
    "DatasetInfo",
    "DataError",
    "ensure_synthetic",
    "check_num_classes",
]


def __getattr__(name):
    if name in ("build_dataset", "load_dataset_info", "DatasetInfo", "check_num_classes"):
        from detbench.data import dataset

        return getattr(dataset, name)
    if name == "ensure_synthetic":
        from detbench.data.synthetic import ensure_synthetic

        return ensure_synthetic
    raise AttributeError(f"module 'detbench.data' has no attribute {name!r}")
