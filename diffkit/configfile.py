"""Options from a file: ``diffkit train --config run.toml`` (TOML, YAML or JSON).

A file is one table of options, keyed by the long option's name (``batch_size`` or ``batch-size`` for
``--batch-size``, ``compile`` for ``--compile``), or one table per command (``[train]``, ``[sample]``,
``[eval]``) so that one file holds a whole experiment. The CLI hands the values to click as the
command's defaults (``ctx.default_map``), so an option typed on the command line still wins, and click
checks each value's type exactly as it checks a typed one.

A run's own ``config.json`` is such a file too: its ``train`` section is read, less the keys that
belong to that run and session only (its folder, ``resume``, the time budgets...), so
``diffkit train --config runs/00003-tiny/config.json --out NEW`` trains the same run again.

A key no option and no config field takes is an error naming the valid keys: a misspelt option must
never be silently ignored.
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffkit.errors import DiffkitError

# The commands that take --config, hence the tables a file with one table per command may hold.
COMMANDS = ("train", "sample", "eval")
FORMATS = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML", ".json": "JSON"}


@dataclass(frozen=True)
class Accepted:
    """What one command takes from a file."""

    command: str  # "train": also the name of its table in a file with one table per command
    options: Mapping[str, str]  # file key -> the option's parameter name (compile -> compile_model)
    flags: frozenset[str] = frozenset()  # parameter names of the on/off options (true or false only)
    # Config fields without an option (train's weight_decay, hflip...), each with its type hint: set on
    # the config itself, so their types are checked here (click checks the options').
    fields: Mapping[str, Any] = field(default_factory=dict)
    # Keys of a run's config.json that belong to that run only (its folder, its session): dropped.
    run_only: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FileOptions:
    """A file's values: ``defaults`` by parameter name (click's default_map), ``fields`` by field name;
    ``keys``: every key it set (options by their long name), the options "given" for a resume check."""

    defaults: dict[str, Any] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    keys: frozenset[str] = frozenset()


def read_table(path: Path) -> dict[str, Any]:
    """The file's top-level table; a missing, unreadable or malformed file is one line naming it."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        suffix = path.suffix or "no suffix"
        raise DiffkitError(f"{path}: a config file is .toml, .yaml, .yml or .json (got {suffix!r})")
    if not path.is_file():
        raise DiffkitError(f"config file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffkitError(f"config file {path} is not readable UTF-8 text ({exc})") from None
    table = _parse(text, kind, path)
    if not isinstance(table, dict):
        raise DiffkitError(f"{path} holds a {type(table).__name__}, not a table of options")
    return table


def _parse(text: str, kind: str, path: Path) -> Any:
    if kind == "JSON":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise DiffkitError(f"{path} is not valid JSON: {exc}") from None
    if kind == "TOML":
        try:
            import tomllib  # Python >= 3.11
        except ImportError:  # pragma: no cover - Python 3.10
            try:
                import tomli as tomllib
            except ImportError:
                raise DiffkitError(
                    f"{path}: reading TOML needs Python 3.11 or the tomli package (pip install tomli)"
                ) from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DiffkitError(f"{path} is not valid TOML: {exc}") from None
    try:
        import yaml
    except ImportError:
        raise DiffkitError(
            f"{path}: reading YAML needs PyYAML (pip install 'diffkit[yaml]'), or write it as TOML or JSON"
        ) from None
    try:
        return yaml.safe_load(text)  # safe_load: plain data only, never an object a file names
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())  # PyYAML's message spans lines; the CLI prints one
        raise DiffkitError(f"{path} is not valid YAML: {problem}") from None


def command_table(table: dict[str, Any], accepted: Accepted, path: Path, run_format: str) -> dict[str, Any]:
    """The part of ``table`` that is ``accepted.command``'s: the whole table, its own table, or (for a
    run's ``config.json``) the run's ``train`` section less the run's own keys."""
    if isinstance(table.get("format"), str) and table["format"] == run_format:
        if accepted.command != "train" or not isinstance(table.get("train"), dict):
            raise DiffkitError(
                f"{path} is a training run's config.json: it holds train's options, not {accepted.command}'s"
            )
        return {key: value for key, value in table["train"].items() if key not in accepted.run_only}
    sections = [key for key in table if key in COMMANDS]
    if not sections:
        return table
    others = sorted(key for key in table if key not in COMMANDS)
    if others:
        raise DiffkitError(
            f"{path} has tables per command ({', '.join(sections)}) and also top-level keys {others}; "
            "put each option in its command's table"
        )
    own = table.get(accepted.command)
    if own is None:
        raise DiffkitError(f"{path} has no [{accepted.command}] table (it has: {', '.join(sections)})")
    if not isinstance(own, dict):
        raise DiffkitError(f"{path}: [{accepted.command}] must be a table of options")
    return own


def file_options(path: Path, accepted: Accepted, run_format: str) -> FileOptions:
    """``path``'s values for ``accepted.command``, each under the name the CLI or the config uses."""
    values = command_table(read_table(path), accepted, path, run_format)
    defaults: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    unknown: list[str] = []
    for raw_key, value in values.items():
        key = str(raw_key).replace("-", "_")
        if key in accepted.options:
            name = accepted.options[key]
            if name in defaults:
                raise DiffkitError(f"{path}: {raw_key!r} repeats an option given under another spelling")
            if value is not None:  # null (JSON, YAML): not given, the option's own default holds
                defaults[name] = _option_value(value, name in accepted.flags, raw_key, path)
        elif key in accepted.fields:
            fields[key] = _field_value(value, accepted.fields[key], raw_key, path)
        else:
            unknown.append(str(raw_key))
    if unknown:
        unknown.sort()
        valid = [*sorted(accepted.options), *sorted(accepted.fields)]
        close = difflib.get_close_matches(unknown[0].replace("-", "_"), valid, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise DiffkitError(
            f"{path}: unknown {accepted.command} option {', '.join(map(repr, unknown))}{hint}; "
            f"valid keys: {', '.join(valid)}"
        )
    keys = frozenset(key for key, name in accepted.options.items() if name in defaults) | frozenset(fields)
    return FileOptions(defaults, fields, keys)


def _option_value(value: Any, is_flag: bool, key: object, path: Path) -> Any:
    """A file value as the option takes it; click then checks its type as it checks a typed value."""
    if is_flag != isinstance(value, bool):
        wanted = "true or false" if is_flag else "a value, not true or false"
        raise DiffkitError(f"{path}: {key} takes {wanted} (got {value!r})")
    if isinstance(value, list):  # the comma list an option takes (eval's metrics = ["fid", "kid"])
        if not all(isinstance(item, str | int | float) and not isinstance(item, bool) for item in value):
            raise DiffkitError(f"{path}: {key} must be a list of plain values (got {value!r})")
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        raise DiffkitError(f"{path}: {key} takes a value, not a table")
    return value


def _field_value(value: Any, hint: Any, key: object, path: Path) -> Any:
    """A config field's file value, if its type is the field's (an int for a float field is taken)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    kinds = typing.get_args(hint) if union else (hint,)
    if value is None and type(None) in kinds:
        return None
    for kind in kinds:
        if kind is bool and isinstance(value, bool):
            return value
        if isinstance(value, bool):
            continue  # true is no number here
        if kind is int and isinstance(value, int):
            return value
        if kind is float and isinstance(value, int | float):
            return float(value)
        if kind in (str, Path) and isinstance(value, str):
            return kind(value)
    wanted = " or ".join(
        "null" if kind is type(None) else getattr(kind, "__name__", str(kind)) for kind in kinds
    )
    raise DiffkitError(f"{path}: {key} must be {wanted} (got {value!r})")
