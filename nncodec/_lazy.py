"""Lazy attributes for packages whose public names live in submodules (imported on first use)."""

from __future__ import annotations

import importlib


def lazy_getattr(package: str, table: dict, namespace: dict):
    """A module ``__getattr__`` that imports ``package.<table[name]>`` on first access."""

    def __getattr__(name):
        mod = table.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{mod}"), name)
        namespace[name] = value
        return value

    return __getattr__
