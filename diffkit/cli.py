"""The ``diffkit`` command line: parse options into a typed config, call one plain function, print.

Every subcommand follows the same shape::

    config = SomeConfig(...)                    # typed, frozen dataclass from the module
    _run(lambda: some_function(config), json_output)

``_run`` turns a :class:`~diffkit.errors.DiffkitError` into one red line and exit code 2, prints the
result as text or as one JSON object (``--json``), and maps Ctrl-C to exit code 130. Logic lives in the
modules, never here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from diffkit import __version__
from diffkit.errors import DiffkitError, NotBuiltError
from diffkit.output import print_result

app = typer.Typer(
    name="diffkit",
    help="Scrape, de-duplicate, train, sample and evaluate image diffusion models on your own hardware.\n\n"
    "Examples:\n\n"
    "  diffkit demo                          # the whole pipeline on a local fake-face site\n\n"
    "  diffkit scrape --n 30000              # 30k unique faces into data/faces\n\n"
    "  diffkit train --preset small          # DDPM on data/faces into runs/NNNNN-small\n\n"
    "  diffkit eval --run runs/00000-small --samples 1000 --metrics fid,kid",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_state: dict[str, bool] = {"debug": False}
err_console = Console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"diffkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
) -> None:
    _state["debug"] = debug


def _run(call: Callable[[], Any], json_output: bool = False) -> Any:
    """Run one command function with the CLI's error, interrupt and output conventions."""
    try:
        result = call()
    except DiffkitError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        raise typer.Exit(130) from None
    if result is not None:
        print_result(result, json_output)
    return result


def _not_built(what: str) -> None:
    raise NotBuiltError(f"{what} is not built in diffkit {__version__} yet")


JSON_OPTION = typer.Option(False, "--json", help="Print one JSON object instead of text.")


@app.command()
def scrape(json_output: bool = JSON_OPTION) -> None:
    """Collect N unique, valid images from a "random image" URL, politely and resumably."""
    _run(lambda: _not_built("diffkit scrape"), json_output)


@app.command()
def dedupe(json_output: bool = JSON_OPTION) -> None:
    """Find exact and perceptual duplicates in an image folder."""
    _run(lambda: _not_built("diffkit dedupe"), json_output)


@app.command()
def train(json_output: bool = JSON_OPTION) -> None:
    """Train a DDPM on an image folder."""
    _run(lambda: _not_built("diffkit train"), json_output)


@app.command()
def sample(json_output: bool = JSON_OPTION) -> None:
    """Sample images from a trained run."""
    _run(lambda: _not_built("diffkit sample"), json_output)


@app.command("eval")
def eval_(json_output: bool = JSON_OPTION) -> None:
    """FID, KID and IS with sample-size caveats in numbers."""
    _run(lambda: _not_built("diffkit eval"), json_output)


@app.command()
def report(
    reports_dir: Path = typer.Argument(Path("reports"), help="Folder of reports written by diffkit."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Write an index page (reports/index.html) listing every report with its headline numbers.

    Example: diffkit report reports
    """
    from diffkit.report import IndexConfig, build_index

    _run(lambda: build_index(IndexConfig(reports_dir=reports_dir)), json_output)


@app.command()
def demo(json_output: bool = JSON_OPTION) -> None:
    """Run the whole pipeline on a local fake-face site (scrape, dedupe, train, sample, eval)."""
    _run(lambda: _not_built("diffkit demo"), json_output)


def main() -> None:
    app()



if __name__ == "__main__":
    main()
