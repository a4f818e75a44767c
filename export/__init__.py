"""Export a trained detector for serving: a TensorFlow Serving SavedModel, or TFLite (SSD).

``export_saved_model`` and ``export_tflite`` (export/exporter.py, export/tflite.py) are imported
lazily, so ``python -m detbench.export --help`` does not pay for TensorFlow.
"""

__all__ = ["export_saved_model", "export_tflite", "ExportError", "INPUT_TYPES", "FORMATS"]


def __getattr__(name):
    if name == "export_tflite":
        from detbench.export.tflite import export_tflite

        return export_tflite
    if name in __all__:
        from detbench.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'detbench.export' has no attribute {name!r}")
