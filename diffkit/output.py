"""Printing command results: one JSON object with ``--json``, readable text otherwise.

A command returns a result object. Its JSON form is ``result.to_dict()`` when defined, else
``dataclasses.asdict(result)``; its text form is ``result.summary_lines()`` when defined, else one
``key: value`` line per top-level field.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console

from diffkit.console import shown

console = Console()


def to_jsonable(value: Any) -> Any:
    """Convert results to plain JSON types; non-finite floats become ``None`` (JSON has no NaN)."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return to_jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return to_jsonable(value.item())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, sort_keys=False)


def print_result(result: Any, json_output: bool) -> None:
    if json_output:
        print(dumps(result), flush=True)
        return
    if hasattr(result, "summary_lines"):
        for line in result.summary_lines():
            console.print(line, highlight=False, soft_wrap=True)
        return
    data = to_jsonable(result)
    if isinstance(data, dict):
        for key, value in data.items():
            console.print(f"[bold]{key}[/]: {shown(value)}", highlight=False, soft_wrap=True)
    else:
        console.print(shown(data), highlight=False)
