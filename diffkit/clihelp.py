"""``--help`` that reads at 80 columns: each command's options in titled panels, in two columns.

Typer's own table gives the option names, their negations (``--no-progress``), the type and the
description a column each, sized by the longest entry of each; at 80 columns that left
``diffkit train --help`` a 20-character description column. Here an option is one left cell
(``--data PATH``, ``-t, --threshold INT``, ``--progress / --no-progress``) at most a third of the
width, wrapped when longer, and its description (with ``[default: ...]`` after it, not under it)
takes the rest.

Which panel an option belongs to is the table :data:`PANELS` below, by parameter name, so the command
functions in cli.py keep only their options; a command not in it keeps Typer's "Arguments" and
"Options". Usage and description are rendered as Typer renders them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.panel import Panel
    from rich.text import Text

# Rich and Typer's rich_utils are imported where help is printed, not here: cli.py imports this module
# for every command, and only --help needs them (a few hundred milliseconds on a loaded 2-core machine).

ARGUMENTS = "Arguments"
OPTIONS = "Options"
# Where an option of a command with panels lands when this table misses it: tests/test_help.py fails on
# any option found here, so a new option is placed on purpose.
UNPLACED = "Other options"

# The shared tail of every command with panels: how the command reports, and --help (--config, where a
# command takes it, heads its last panel).
_OUTPUT = ("report_path", "progress", "json_output", "help")

# command -> panel title -> parameter names, panels in the order shown.
PANELS: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "Data": ("data", "resolution", "labels", "label_dropout"),
        "Model": ("preset", "channels", "num_res_blocks"),
        "Schedule and optimiser": (
            "schedule", "prediction", "timestep_sampling", "lr", "warmup_kimg", "batch_size", "grad_accum",
            "ema_halflife_kimg", "seed",
        ),
        "Length": ("steps", "kimg", "epochs", "max_minutes"),
        "Device and precision": ("device", "precision", "compile_model"),
        "Evaluation while training": ("sample_every_kimg", "eval_every_kimg", "eval_samples", "eval_steps",
                                      "eval_reference"),
        "Run and output": (
            "config", "out", "resume", "dry_run", "phema_every_kimg", "tensorboard", "progress",
            "json_output", "help",
        ),
    },
    "sample": {
        "What to sample": ("run", "snapshot", "n", "seed", "label", "guidance"),
        "Sampler": ("sampler", "steps", "eta"),
        "Device and precision": ("device", "precision", "batch_size"),
        "Output": ("config", "out", "grid", "gif", *_OUTPUT),
    },
    "eval": {
        "Images": ("run", "generated", "reference", "samples", "reference_samples"),
        "Metrics": ("metrics", "features", "engine", "bootstrap"),
        "Sampling with --run": ("sampler", "steps", "seed"),
        "Weights and caches": ("weights", "vgg_weights", "dinov2_weights", "cache_dir", "save_stats"),
        "Device": ("device", "batch_size"),
        "Output": ("config", *_OUTPUT),
    },
    "scrape": {
        "Source": ("n", "url", "urls", "expect_size", "threshold", "near_dup_threshold"),
        "Politeness": ("concurrency", "rps", "timeout", "max_retries", "user_agent"),
        "Output": ("out", *_OUTPUT),
    },
    "dedupe": {
        ARGUMENTS: ("directory",),
        "Matching": ("hash_kind", "threshold", "min_similarity", "verify", "against", "workers"),
        "Action": ("action", "to", "yes"),
        "Output": _OUTPUT,
    },
}  # fmt: skip

# Typer's type names shown as metavars: `--data PATH`, not `--data <path>`.
_TYPE_NAMES = {"path": "PATH", "int": "INT", "integer": "INT", "float": "FLOAT", "str": "TEXT"}
_ANGLED = re.compile(r"^<(.*)>$")


def panel_of(command: str, param: Any) -> str:
    """The panel ``param`` of ``command`` is shown in."""
    panels = PANELS.get(command)
    argument = getattr(param, "param_type_name", "") == "argument"
    if panels is None:
        return ARGUMENTS if argument else OPTIONS
    return next((title for title, names in panels.items() if param.name in names), UNPLACED)


def arrange(command: str, params: list[Any]) -> None:
    """Set each parameter's ``rich_help_panel`` and order ``params`` panel by panel (in place, stably),
    so the panels come in the table's order and options within a panel in the table's order too."""
    panels = PANELS.get(command)
    for param in params:
        param.rich_help_panel = panel_of(command, param)
    if panels is None:
        return
    order = {name: index for index, name in enumerate(n for names in panels.values() for n in names)}
    params.sort(key=lambda param: order.get(param.name, len(order)))


def _metavar(param: Any, ctx: Any) -> str:
    """``PATH``, ``INT``, ``tiny|small|base`` or the option's own metavar; nothing for a flag."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    shown = param.display_type_rich(ctx) if hasattr(param, "display_type_rich") else param.make_metavar(ctx)
    shown = str(shown or "")
    inner = _ANGLED.match(shown)
    if inner:
        shown = _TYPE_NAMES.get(inner.group(1).lower(), inner.group(1))
    return shown


def _left_cell(param: Any, ctx: Any) -> Text:
    from rich.text import Text
    from typer import rich_utils

    if param.param_type_name == "argument":
        return Text(param.metavar or param.name.upper(), style=rich_utils.STYLE_OPTION)
    names = ", ".join(sorted(param.opts, key=len))  # the short name first: -t, --threshold
    if param.secondary_opts:
        names += " / " + ", ".join(sorted(param.secondary_opts, key=len))
    metavar = _metavar(param, ctx)
    cell = rich_utils.highlighter(Text(names))
    if metavar:
        cell.append(" " + metavar, style=rich_utils.STYLE_TYPES)
    return cell


def _help_cell(param: Any, ctx: Any) -> Text:
    """The help (Rich markup, as Typer reads it), then ``[default: ...]`` / ``[required]`` on the same
    line: click's own help record supplies those, so they read as they do elsewhere in click."""
    from rich.text import Text
    from typer import rich_utils

    help_text = getattr(param, "help", None) or ""
    record = param.get_help_record(ctx)
    full = record[1] if record else help_text
    extra = full[len(help_text) :].strip() if full.startswith(help_text) else ""
    cell = rich_utils.highlighter(Text.from_markup(help_text, style=rich_utils.STYLE_OPTION_HELP))
    if extra:
        cell.append((" " if help_text else "") + extra, style=rich_utils.STYLE_OPTION_DEFAULT)
    return cell


def _panel(title: str, rows: list[tuple[Text, Text]], left: int) -> Panel:
    from rich.panel import Panel
    from rich.table import Table
    from typer import rich_utils

    table = Table.grid(padding=(0, 2), expand=True)
    table.add_column(width=left, overflow="fold")
    table.add_column(ratio=1, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return Panel(
        table,
        title=title,
        title_align=rich_utils.ALIGN_OPTIONS_PANEL,
        border_style=rich_utils.STYLE_OPTIONS_PANEL_BORDER,
    )


def panels(command: Any, ctx: Any) -> dict[str, list[Any]]:
    """The visible parameters of ``command`` by panel, panels in the order of their first parameter."""
    grouped: dict[str, list[Any]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False):
            continue
        title = getattr(param, "rich_help_panel", None) or panel_of(command.name or "", param)
        grouped.setdefault(title, []).append(param)
    return grouped


def print_help(command: Any, ctx: Any, markup_mode: Any) -> None:
    """Usage and description as Typer prints them, then the option panels of this module."""
    from rich.align import Align
    from rich.padding import Padding
    from rich.text import Text
    from typer import rich_utils

    console = rich_utils._get_rich_console()  # Typer's console: its width, colours and styles
    usage = rich_utils.highlighter(command.get_usage(ctx))
    console.print(Padding(usage, 1), style=rich_utils.STYLE_USAGE_COMMAND)
    if command.help:
        text = rich_utils._get_help_text(obj=command, markup_mode=markup_mode)
        console.print(Padding(Align(text, pad=False), (0, 1, 1, 1)))
    grouped = {
        title: [(_left_cell(param, ctx), _help_cell(param, ctx)) for param in params]
        for title, params in panels(command, ctx).items()
    }
    # One left column for all panels, at most a third of the width: the descriptions get the rest.
    inner = console.width - 4  # the panel's two borders and its one-column padding each side
    longest = max((left.cell_len for rows in grouped.values() for left, _ in rows), default=0)
    left = min(longest, max(12, inner // 3))
    for title, rows in grouped.items():
        console.print(_panel(title, rows, left))
    if command.epilog:
        console.print(Padding(Align(Text(command.epilog), pad=False), 1))
