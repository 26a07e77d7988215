"""One page per dataset + run: the scrape, dedupe, train, sample and eval reports summarised and linked.

Built by ``diffkit report`` from the sidecars in the reports folder (see :mod:`diffkit.report.sidecars`
for how a report names its dataset and run). A run's page holds the newest report of each stage with
its headline, numbers, caveats and pictures (taken from the stage's own HTML page), the run's config,
and links to every report of the run; a dataset that has no run yet gets a page of its own.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from diffkit.atomic import atomic_write_text
from diffkit.console import printable, to_jsonable
from diffkit.report.render import figure_to_data_uri, relative_href, render_template, report_metadata
from diffkit.report.sidecars import (
    PAGE_MAX_BYTES,
    SCHEMA,
    Sidecar,
    UnreadableFile,
    dataset_of,
    folder_key,
    read_regular_file,
    run_of,
)

STAGES = ("scrape", "dedupe", "train", "sample", "eval")
RUN_PAGE_COMMAND = "run"
PICTURES_PER_SECTION = 6  # a contact sheet of 36 thumbnails shows its newest few here
SUMMARY_ITEMS = 10
CAVEAT_HEADINGS = ("caveat", "warning")


@dataclass
class RunGroup:
    """The reports of one run (or of one dataset without a run), newest first per command."""

    dataset: str | None
    run: str | None
    reports: dict[str, list[Sidecar]] = field(default_factory=dict)

    def add(self, sidecar: Sidecar) -> None:
        self.reports.setdefault(sidecar.command, []).append(sidecar)

    @property
    def key(self) -> str:
        return f"{self.run or ''}\0{self.dataset or ''}"

    def page_name(self) -> str:
        """``run-<name>-<hash>.html``: readable, and distinct for two runs of the same folder name."""
        folder = Path(self.run or self.dataset or "reports")
        name = re.sub(r"[^A-Za-z0-9_-]+", "-", "-".join(folder.parts[-2:])).strip("-")[:48] or "run"
        digest = hashlib.sha256(self.key.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        return f"{RUN_PAGE_COMMAND}-{name}-{digest}.html"

    def commands(self) -> list[str]:
        return [c for c in STAGES if c in self.reports] + [c for c in self.reports if c not in STAGES]


def eval_run(sidecar: Sidecar) -> str | None:
    """The run an eval's generated images came from, by their provenance only.

    An eval of two folders names a run only when its images' provenance.json (written by ``diffkit
    sample`` or ``eval --run``) names one: its reference being a run's training data says nothing about
    who made the images. Sidecars from before provenance was recorded name a run only by ``--run``.
    """
    data = sidecar.content.get("data")
    if isinstance(data, dict) and "provenance" in data:
        provenance = data["provenance"]
        run = provenance.get("run") if isinstance(provenance, dict) else None
        return run if isinstance(run, str) and run else None
    return run_of(sidecar)


def _run_of(sidecar: Sidecar) -> str | None:
    return eval_run(sidecar) if sidecar.command == "eval" else run_of(sidecar)


def group_runs(sidecars: list[Sidecar], base: Path) -> list[RunGroup]:
    """Link the reports of each run: by the run folder they name (an eval: by its images' provenance),
    and scrape/dedupe by the dataset folder.

    ``base`` is where relative folders in the sidecars are taken from: the folder the commands ran in,
    which is the reports folder's parent for the default ``reports/``.
    """
    stage_reports = [s for s in sidecars if s.command != RUN_PAGE_COMMAND]
    runs: dict[str, RunGroup] = {}
    for sidecar in stage_reports:  # newest first: a run's newest train report names its dataset
        run = _run_of(sidecar)
        if run is None:
            continue
        group = runs.setdefault(folder_key(run, base), RunGroup(dataset=None, run=run))
        if group.dataset is None and sidecar.command in ("train", "eval"):
            group.dataset = dataset_of(sidecar)
        group.add(sidecar)
    by_dataset: dict[str, list[RunGroup]] = {}
    for group in runs.values():
        if group.dataset is not None:
            by_dataset.setdefault(folder_key(group.dataset, base), []).append(group)
    datasets: dict[str, RunGroup] = {}
    for sidecar in stage_reports:
        dataset = dataset_of(sidecar)
        if _run_of(sidecar) is not None or dataset is None:
            continue
        key = folder_key(dataset, base)
        if key in by_dataset and sidecar.command in ("scrape", "dedupe"):
            for group in by_dataset[key]:  # a dataset's scrape and dedupe belong to each of its runs
                group.add(sidecar)
        else:  # an eval of images no run is known to have made: its reference's page, not a run's
            datasets.setdefault(key, RunGroup(dataset=dataset, run=None)).add(sidecar)
    return list(runs.values()) + list(datasets.values())


class _Pictures(HTMLParser):
    """The pictures of a report page (``<img class="picture">``, not its plots), by section heading."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[dict[str, Any]] = []
        self._in_heading = False
        self._in_caption = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "h2":
            self._in_heading = True
            self.sections.append({"heading": "", "pictures": []})
        elif tag == "img" and "picture" in (attributes.get("class") or "").split() and self.sections:
            src = attributes.get("src") or ""
            if src.startswith("data:image/"):  # only embedded images: the page stays self-contained
                self.sections[-1]["pictures"].append({"src": src, "caption": attributes.get("alt") or ""})
        elif tag == "figcaption":
            self._in_caption = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2":
            self._in_heading = False
        elif tag == "figcaption":
            self._in_caption = False

    def handle_data(self, data: str) -> None:
        if self._in_heading and self.sections:
            self.sections[-1]["heading"] += data


def pictures_of(html_path: Path) -> list[dict[str, Any]]:
    """``[{"heading", "pictures": [{"src", "caption"}], "more"}]`` for the sections that have pictures."""
    parser = _Pictures()
    try:  # the page was a regular file when its sidecar was read; it may have been swapped since
        parser.feed(read_regular_file(html_path, PAGE_MAX_BYTES).decode("utf-8", errors="replace"))
    except UnreadableFile:
        return []
    out = []
    for section in parser.sections:
        pictures = section["pictures"]
        if pictures:
            shown = pictures[:PICTURES_PER_SECTION]
            out.append(
                {"heading": section["heading"].strip(), "pictures": shown, "more": len(pictures) - len(shown)}
            )
    return out


def _sections(sidecar: Sidecar) -> list[dict[str, Any]]:
    return [s for s in sidecar.content.get("sections") or [] if isinstance(s, dict)]


def _badges(sidecar: Sidecar) -> list[str]:
    badges: list[str] = []
    for section in _sections(sidecar):
        badges.extend(str(badge) for badge in section.get("badges") or [] if str(badge) not in badges)
    return badges


def _caveats(sidecar: Sidecar) -> list[str]:
    """The notes a reader must not miss: the report's caveat and warning sections and its warnings."""
    notes: list[str] = []
    for section in _sections(sidecar):
        heading = str(section.get("heading", "")).lower()
        if any(word in heading for word in CAVEAT_HEADINGS):
            if section.get("text"):
                notes.append(str(section["text"]))
            for row in section.get("table") or []:
                if isinstance(row, dict):
                    notes.extend(str(value) for value in row.values() if isinstance(value, str))
    warnings = (
        (sidecar.content.get("data") or {}).get("warnings")
        if isinstance(sidecar.content.get("data"), dict)
        else None
    )
    notes.extend(str(warning) for warning in warnings or [] if isinstance(warning, str))
    return notes


def _config_rows(sidecar: Sidecar) -> list[dict[str, Any]]:
    """A stage's settings as option/value rows (train: its run config; others: ``data.config``)."""
    data = sidecar.content.get("data")
    config = data.get("config") if isinstance(data, dict) else None
    if isinstance(config, dict) and isinstance(config.get("train"), dict):
        config = config["train"]
    if not isinstance(config, dict):
        return []
    return [
        {"option": key, "value": value}
        for key, value in config.items()
        if not isinstance(value, (dict, list))
    ]


def _data(sidecar: Sidecar) -> dict[str, Any]:
    data = sidecar.content.get("data")
    return data if isinstance(data, dict) else {}


def _train_evals(sidecar: Sidecar) -> list[dict[str, Any]]:
    stats = _data(sidecar).get("stats")
    return [r for r in stats or [] if isinstance(r, dict) and r.get("kind") == "eval"]


def measured_on(sidecar: Sidecar) -> str:
    """What an eval's or a training run's FID/KID was measured on: the images' maker and the reference.

    Two FIDs of one snapshot differ by tens of percent between samplers and step counts, so a number
    shown without its snapshot, sampler, steps, N and reference M cannot be compared with another.
    """
    data = _data(sidecar)
    if sidecar.command == "eval":
        made = data.get("made_by") or "images of unknown origin (no provenance.json)"
        m = data.get("n_reference")
        return f"generated: {made}; reference: {data.get('reference')}" + (f", M={m}" if m else "")
    evals = _train_evals(sidecar) if sidecar.command == "train" else []
    if not evals:
        return ""
    last = evals[-1]
    train = (data.get("config") or {}).get("train") if isinstance(data.get("config"), dict) else None
    reference = train.get("data") if isinstance(train, dict) else None
    return (
        f"generated during training: the EMA weights at {last.get('kimg'):g} kimg, "
        f"{str(last.get('sampler', '?')).upper()} {last.get('sampler_steps')} steps, "
        f"seed {last.get('seed')}, N={last.get('n')}; "
        f"reference: {reference or 'the training data'}, M={last.get('n_reference')}"
    )


def labelled(headline: str, sidecar: Sidecar) -> str:
    """An FID headline followed by what it was measured on (``FID@100 53.8 (...) — generated: ...``)."""
    measured = measured_on(sidecar)
    return f"{headline} — {measured}" if headline and measured else headline


def _plots(sidecar: Sidecar) -> list[dict[str, str]]:
    """The train report's loss and FID/KID curves, drawn again from its stats (its page embeds them as
    plots, which the run page does not copy)."""
    if sidecar.command != "train":
        return []
    # matplotlib loads here, not with the module: the CLI imports the index (and so this module) for
    # `diffkit report`'s defaults, and `diffkit --help` must stay fast.
    from diffkit.report.plots import loss_plot, metric_plot

    stats = [r for r in _data(sidecar).get("stats") or [] if isinstance(r, dict)]
    evals = _train_evals(sidecar)
    label = str(evals[-1].get("fid_label") or "FID") if evals else "FID"
    figures = [
        ("Loss", loss_plot(stats)),
        ("FID during training", metric_plot(evals, "fid", label, "FID")),
        ("KID during training", metric_plot(evals, "kid", label.replace("FID", "KID"), "KID")),
    ]
    return [{"heading": heading, "src": figure_to_data_uri(figure)} for heading, figure in figures if figure]


def stage_view(command: str, sidecars: list[Sidecar], href: Any) -> dict[str, Any]:
    newest = sidecars[0]
    return {
        "command": command,
        "title": newest.title,
        "href": href(newest.html_path.name),
        "created": newest.created,
        "headline": newest.headline,
        "measured_on": measured_on(newest),  # shown right below the headline: what the FID was measured on
        "summary": list(newest.summary.items())[:SUMMARY_ITEMS],
        "badges": _badges(newest),
        "caveats": _caveats(newest),
        "plots": _plots(newest),
        "pictures": pictures_of(newest.html_path),
        "config": _config_rows(newest),
        "earlier": [
            {"title": s.title, "created": s.created, "href": href(s.html_path.name)} for s in sidecars[1:]
        ],
    }


def train_headline(sidecar: Sidecar) -> str:
    """``Training interrupted at 0.06 kimg (step 15)``, with the last FID during training if any."""
    summary = sidecar.summary
    kimg, steps = summary.get("kimg"), summary.get("steps")
    where = f"{kimg:g} kimg" if isinstance(kimg, (int, float)) else ""
    where += f" (step {steps})" if isinstance(steps, int) else ""
    status = str(summary.get("status", ""))
    if status == "interrupted":
        line = f"Training interrupted at {where}" if where else "Training interrupted"
    elif status.startswith("stopped on the"):  # a --max-minutes budget: resumable, not finished
        line = f"Training {status} at {where}" if where else f"Training {status}"
    else:
        line = f"Trained {where}" if where else "Trained"
    evals = _train_evals(sidecar)
    if evals and evals[-1].get("headline"):
        line += f"; last {labelled(str(evals[-1]['headline']), sidecar)}"
    return line


def run_headline(group: RunGroup) -> str:
    """The run's one line: its newest eval's FID (labelled with what made the images), else its training's
    state; a dataset's stages lead only on a page that has no run."""
    for sidecar in group.reports.get("eval", []):
        if sidecar.headline:
            return labelled(sidecar.headline, sidecar)
    trains = group.reports.get("train", [])
    if trains:  # never the scrape's line on a run's page: an interrupted run says so first
        return train_headline(trains[0])
    for command in ("sample", "dedupe", "scrape"):
        for sidecar in group.reports.get(command, []):
            if sidecar.headline:
                return sidecar.headline
    return ""


def run_title(group: RunGroup) -> str:
    if group.run is None:
        return f"Dataset {group.dataset}"
    return f"Run {group.run}" + (f" on {group.dataset}" if group.dataset else "")


@dataclass(frozen=True)
class RunPage:
    group: RunGroup
    html: Path
    json: Path
    headline: str


def write_run_pages(reports_dir: Path, sidecars: list[Sidecar]) -> list[RunPage]:
    """One page (plus its sidecar) per dataset + run found among ``sidecars``, the folder's reports."""
    pages = []
    for group in group_runs(sidecars, reports_dir.resolve().parent):
        html_path = reports_dir / group.page_name()
        if html_path.is_symlink() or html_path.with_suffix(".json").is_symlink():
            continue  # never write through a link to somewhere else
        pages.append(_write_run_page(group, html_path))
    return pages


def _write_run_page(group: RunGroup, html_path: Path) -> RunPage:
    json_path = html_path.with_suffix(".json")
    stages = [stage_view(command, group.reports[command], relative_href) for command in group.commands()]
    newest = {stage["command"]: stage["href"] for stage in stages}
    chain = [{"command": command, "href": newest.get(command)} for command in STAGES]
    headline = run_headline(group)
    meta = report_metadata()
    title = run_title(group)
    html = render_template(
        "run.html",
        title=title,
        command=RUN_PAGE_COMMAND,
        meta=meta,
        json_name=printable(json_path.name),
        json_href=relative_href(json_path.name),
        headline=headline,
        dataset=group.dataset,
        run=group.run,
        chain=chain,
        stages=stages,
    )
    sidecar = {
        "schema": SCHEMA,
        "title": title,
        "command": RUN_PAGE_COMMAND,
        **meta,
        "headline": headline,
        "summary": {"dataset": group.dataset, "run": group.run, "stages": " → ".join(group.commands())},
        "sections": [],
        "data": {
            "dataset": group.dataset,
            "run": group.run,
            "reports": {c: [s.html_path.name for s in group.reports[c]] for c in group.commands()},
        },
    }
    atomic_write_text(json_path, json.dumps(to_jsonable(sidecar), indent=2) + "\n", durable=False)
    atomic_write_text(html_path, printable(html), durable=False)
    return RunPage(group=group, html=html_path, json=json_path, headline=headline)
