"""The configuration schema: proto2 messages, one file per concept.

The ``*_pb2.py`` modules are generated (never edited).  They are compiled at
install time; a checkout where any is missing or older than its ``.proto`` is
compiled here, before the first import of a generated module.
"""

import os as _os

from detbench.protos import protoc_build as _protoc_build

_HERE = _os.path.dirname(_os.path.abspath(__file__))
if _protoc_build.stale_protos(_HERE):
    _protoc_build.compile_protos(_HERE, force=True)
