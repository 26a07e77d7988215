"""Lazy package exports: ``from diffkit.train import train`` imports ``diffkit.train.run`` only then.

The CLI needs only the configs (their defaults and choices) to build ``--help`` and shell completion;
importing every package eagerly pulled in torch and matplotlib (about 2-3 s) on every start, TAB
included. Each package ``__init__`` lists its exports here instead (the pattern of scientific Python's
``lazy_loader.attach``), so a name's module loads on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["attach"]


def attach(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``; ``exports`` maps a name to its submodule
    (relative to ``package``, or an absolute ``diffkit.`` module for a re-export)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        absolute = module if module.startswith("diffkit.") else f"{package}.{module}"
        return getattr(importlib.import_module(absolute), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
