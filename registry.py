"""Name -> class registries (decorator registration, helpful misses)."""

import difflib

from detbench.errors import RegistryError


class Registry:
    """A named mapping filled by a decorator::

        FEATURE_EXTRACTORS = Registry("feature extractor")

        @FEATURE_EXTRACTORS.register("resnet50_v1")
        class ResNet50(...): ...

    Looking up an unknown name raises RegistryError listing the known names,
    the closest first.
    """

    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, name):
        def decorator(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            try:
                obj.registered_name = name
            except (AttributeError, TypeError):
                pass
            return obj

        return decorator

    def get(self, name):
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name):
        known = sorted(self._entries)
        if not known:
            return f"unknown {self.kind} {name!r}; none is registered"
        close = difflib.get_close_matches(str(name), known, n=len(known), cutoff=0.0)
        return f"unknown {self.kind} {name!r}; known: {', '.join(close or known)}"

    def names(self):
        return sorted(self._entries)

    def items(self):
        return sorted(self._entries.items())

    def __contains__(self, name):
        return name in self._entries

    def __len__(self):
        return len(self._entries)
