"""The one error type the data package raises for bad input.

Messages are one line and name the file, the image id and the annotation id
(or TFRecord record) at fault.
"""

from detbench.errors import DetbenchError


class DataError(DetbenchError, ValueError):
    """Bad or missing data: corrupt image, bad box, unknown category, empty set."""
