"""Meta-architectures, registered by the name of their model.proto oneof field.

Importing the package imports every module in it, so a new meta-architecture
registers itself from its own module (nothing to add here).
"""

import importlib as _importlib
import pkgutil as _pkgutil

for _module in _pkgutil.iter_modules(__path__):
    _importlib.import_module(f"{__name__}.{_module.name}")
