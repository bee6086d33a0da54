"""Public names of a package imported on first use (PEP 562).

The module ``__getattr__`` and ``__dir__`` of ``ncmse`` and ``ncmse.ufm``: importing either loads
no torch until a name that needs it is used.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(
    package: str, table: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for the module ``package``, serving the names of ``table``.

    Parameters
    ----------
    package : str
        The importing module's ``__name__`` (it must be in ``sys.modules`` when a name is used).
    table : mapping of str -> str
        Public name -> the module that defines it. A name is imported on first use and then
        kept in ``package``, so the next use is a plain attribute.

    Returns
    -------
    tuple of callable
        Assign them to the module's ``__getattr__`` and ``__dir__``.
    """

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(table))

    return __getattr__, __dir__
