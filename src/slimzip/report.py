"""Reports of run directories: tables and plots as plain data, rendered to text or to one HTML file.

A run directory's kind is recognised by the files it holds (a registry, first match wins); each kind
turns its files into ``Section``s. Plots need matplotlib (``pip install 'slimzip[report]'``); without
it the HTML report has the tables only.
"""

from __future__ import annotations

import dataclasses
import html
import io
import json
import sqlite3
from pathlib import Path
from typing import Any, Callable

from .errors import SlimzipError
from .summaries import CompareSummary, PruneSummary, SearchSummary, TrainSummary, read_summary


@dataclasses.dataclass
class Series:
    name: str
    x: list[float]
    y: list[float]
    style: str = "line"  # line, points or star


@dataclasses.dataclass
class Plot:
    x_label: str
    y_label: str
    series: list[Series]
    log_x: bool = False
    hline: float | None = None  # a target, drawn across
    hline_label: str = ""
    y_min: float | None = None  # points below are left out of view
    vlines: list[tuple[float, str]] = dataclasses.field(default_factory=list)  # budgets, drawn up and down


@dataclasses.dataclass
class Section:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    plot: Plot | None = None
    notes: list[str] = dataclasses.field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SlimzipError(f"{path}: not readable JSON ({e.__class__.__name__})") from None


def _read_jsonl(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        raise SlimzipError(f"{path}: not readable JSON lines ({e.__class__.__name__})") from None


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.2f}%"


def _epochs_section(rows: list[dict], title: str) -> Section:
    """Per-epoch metrics (``metrics.jsonl``) as a table and a validation-accuracy curve."""
    columns = ["epoch", "lr", "train loss", "train acc", "val loss", "val acc", "seconds"]
    table = [[r["epoch"], f"{r['lr']:.3g}", f"{r['train_loss']:.4f}", _pct(r.get("train_acc")),
              "" if "val_loss" not in r else f"{r['val_loss']:.4f}", _pct(r.get("val_acc")), f"{r['seconds']:.1f}"]
             for r in rows]
    curves = [Series("val accuracy", [r["epoch"] for r in rows if "val_acc" in r],
                     [100 * r["val_acc"] for r in rows if "val_acc" in r]),
              Series("train accuracy", [r["epoch"] for r in rows], [100 * r["train_acc"] for r in rows])]
    return Section(title, columns, table, Plot("epoch", "accuracy (%)", curves))


def _train(run: Path) -> list[Section]:
    s = read_summary(run / "summary.json", TrainSummary) if (run / "summary.json").is_file() else None
    rows = _read_jsonl(run / "metrics.jsonl")
    head = Section("training run", ["model", "dataset", "params", "MACs", "epochs", "val acc", "test acc", "seconds"],
                   [[s["model"], s["dataset"], f"{s['params']:,}", f"{s['macs']:,}", s["epochs_run"],
                     _pct(s["val_accuracy"]), _pct(s["test_accuracy"]), f"{s['train_seconds']:.0f}"]] if s else
                   [["?", "?", "", "", len(rows), "", "", f"{sum(r['seconds'] for r in rows):.0f}"]],
                   notes=[] if s else ["unfinished: no summary.json yet"])
    return [head, _epochs_section(rows, "epochs")]


def _prune_channels(run: Path) -> list[Section]:
    s = read_summary(run / "summary.json", PruneSummary)
    b, a = s["before"], s["after"]
    rows = [["params", f"{b['cost']['params']:,}", f"{a['cost']['params']:,}"],
            ["MACs", f"{b['cost']['macs']:,}", f"{a['cost']['macs']:,}"],
            ["val accuracy", _pct(b.get("val_accuracy")), _pct(a.get("val_accuracy"))],
            ["test accuracy", "", _pct(a.get("test_accuracy"))]]
    rows += [[f"width {k}", b["widths"][k], a["widths"].get(k, "")] for k in b["widths"]]
    sections = [Section(f"prune-channels: {s['model']} ({s['method']}, ratio {s['channel_ratio']}, {s['scope']})",
                        ["", "before", "after"], rows)]
    if (run / "finetune" / "metrics.jsonl").is_file():
        sections.append(_epochs_section(_read_jsonl(run / "finetune" / "metrics.jsonl"), "fine-tune epochs"))
    return sections


def _dropnet(run: Path) -> list[Section]:
    cycles = _read_jsonl(run / "cycles.jsonl")
    rows = [[c["cycle"], f"{c['remaining']:.1%}", f"{c['params']:,}", _pct(c["val_accuracy"]),
             _pct(c["test_accuracy"])] for c in cycles]
    plot = Plot("fraction of units remaining", "accuracy (%)",
                [Series("test", [c["remaining"] for c in cycles], [100 * c["test_accuracy"] for c in cycles]),
                 Series("val", [c["remaining"] for c in cycles], [100 * c["val_accuracy"] for c in cycles])],
                log_x=True)
    return [Section("DropNet cycles", ["cycle", "units left", "params", "val acc", "test acc"], rows, plot)]


def _search(run: Path) -> list[Section]:
    path = run / "summary.json"
    raw = _read_json(path) if path.is_file() else {}  # an infeasible search's has no file: target and cost only
    s = read_summary(path, SearchSummary) if isinstance(raw, dict) and raw.get("file") else None
    try:
        with sqlite3.connect(f"file:{run / 'journal.sqlite'}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            cands = [dict(r) for r in db.execute("SELECT * FROM candidates ORDER BY id")]
    except sqlite3.Error as e:
        raise SlimzipError(f"{run / 'journal.sqlite'}: not a readable search journal ({e})") from None
    winner = (s or {}).get("knobs", {}).get("candidate")
    asked = {c["id"] for c in s["candidates"]} if s and s.get("candidates") else None  # the rest ran ahead

    def mark(c: dict) -> str:
        return "winner" if c["id"] == winner else "speculative" if asked is not None and c["id"] not in asked else ""
    rows = [[c["id"], c["strategy"], f"{c['channel_ratio']:.4g}", f"{c['sparsity']:.4g}", c["status"],
             _pct(c["val_accuracy"]), "" if c["file_bytes"] is None else f"{c['file_bytes']:,}",
             f"{c['epochs']:.2f}", mark(c)] for c in cands]
    ok = [c for c in cands if c["status"] == "ok" and c["file_bytes"]]
    target = raw.get("target_accuracy") if isinstance(raw, dict) else None
    budgets = _budgets(run)
    chosen = next((c for c in ok if c["id"] == winner), None)
    plots = [_front_plot(ok, chosen, target, "file_bytes", "file bytes", budgets.get("max_bytes"))]
    plots += [_front_plot(ok, chosen, target, field, label, budgets[name]) for name, (field, label) in AXES.items()
              if budgets.get(name)]
    sections = []
    if s:
        sr = s["search"]
        sections.append(Section(
            f"search ({sr['strategy']})", ["target", "val acc", "test acc", "file bytes", "ratio", "channel ratio",
                                           "sparsity", "candidates", "epochs", "seconds"],
            [[_pct(target), _pct(s["val_accuracy"]), _pct(s["test_accuracy"]), f"{s['file_bytes']:,}",
              f"{s['compression_ratio']:.1f}x", s["knobs"]["channel_ratio"], s["knobs"]["sparsity"], sr["candidates"],
              f"{sr['epochs']:.2f}", f"{sr['wall_seconds']:.0f}"]]))
    sections.append(Section("candidates", ["id", "strategy", "channel ratio", "sparsity", "status", "val acc",
                                           "file bytes", "epochs", ""], rows, plots[0],
                            notes=[] if s else [_unfinished(raw)]))
    return sections + [Section(f"accuracy against {p.x_label}", [], [], p) for p in plots[1:]]


def chosen_file(run: Path) -> Path | None:
    """The file a finished search run wrote (None: unfinished, infeasible, or moved away)."""
    raw = _read_json(run / "summary.json") if (run / "summary.json").is_file() else {}
    file = raw.get("file") if isinstance(raw, dict) else None
    return Path(file) if isinstance(file, str) and Path(file).is_file() else None


AXES = {"max_params": ("params", "params"), "max_macs": ("macs", "MACs per image"),
        "max_flash": ("flash_bytes", "C flash bytes"), "max_ram": ("ram_bytes", "C RAM bytes"),
        "max_latency_ms": ("latency_ms", "C ms per image")}  # a budget's plot: candidate field, axis label


def _budgets(run: Path) -> dict:
    """The search's budgets from its run directory's settings (empty when none were set)."""
    config = _read_json(run / "config.json") if (run / "config.json").is_file() else {}
    search = config.get("search", {}) if isinstance(config, dict) else {}
    return {k: search[k] for k in ("max_bytes", *AXES) if search.get(k)} if isinstance(search, dict) else {}


def _unfinished(raw: Any) -> str:
    closest = raw.get("best_effort") if isinstance(raw, dict) else None
    if isinstance(closest, dict) and closest.get("file_bytes"):
        return (f"infeasible: nothing met the target and the budgets; closest {closest['file_bytes']:,} B at "
                f"{_pct(closest.get('val_accuracy'))}" + (f", written to {closest['file']}" if closest.get("file") else ""))
    return "unfinished: no summary.json yet (the journal so far)"


def _front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Pareto front: each point more accurate than every smaller one."""
    front: list[tuple[float, float]] = []
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or y > front[-1][1]:
            front.append((x, y))
    return front


def _front_plot(ok: list[dict], chosen: dict | None, target: float | None, field: str, label: str,
                budget: float | None) -> Plot:
    points = [(c[field], 100 * c["val_accuracy"]) for c in ok if c.get(field)]
    front = _front(points)
    winner = ([Series("chosen", [chosen[field]], [100 * chosen["val_accuracy"]], "star")]
              if chosen and chosen.get(field) else [])
    return Plot(label, "val accuracy (%)",
                [Series("candidates", [p[0] for p in points], [p[1] for p in points], "points"),
                 Series("Pareto front", [p[0] for p in front], [p[1] for p in front], "line"), *winner],
                log_x=True, hline=None if target is None else 100 * target, hline_label="target",
                y_min=None if not target else 100 * target - 3,  # the decisions happen near the target
                vlines=[(budget, "budget")] if budget else [])


def layers_section(path: Path, layers: list[dict] | None, error: str = "") -> Section:
    """A file layer by layer (``inspect``'s rows): width before -> after, weights kept, bits, bytes."""
    if layers is None:
        return Section(f"layers of {path.name}", [], [], notes=[f"not readable: {error}"])
    rows = [[r["layer"], r["kind"], (f"{r['width_before']} -> {r['width']}" if r["width_before"] not in (None, r["width"])
                                     else r["width"]), f"{r['weights']:,}", f"{r['kept']:,}", r["bits"] or "",
             f"{r['bytes']:,}"] for r in layers]
    return Section(f"layers of {path.name}", ["layer", "kind", "width", "weights", "kept", "bits", "bytes"], rows)


def _compare(run: Path) -> list[Section]:
    return compare_sections(read_summary(run / "compare.json", CompareSummary))


def compare_sections(c: CompareSummary) -> list[Section]:
    """A compare-search result as tables: the strategies, and the ablation if there is one."""
    def row(name: str, r: dict) -> list[Any]:
        sr = r["search"]
        full = sr.get("full_data_epochs")
        return [name, f"{r['file_bytes']:,}", f"{r['compression_ratio']:.1f}x", _pct(r["val_accuracy"]),
                _pct(r["test_accuracy"]), r["knobs"]["channel_ratio"], r["knobs"]["sparsity"], sr["candidates"],
                f"{sr['epochs']:.2f}", f"{sr.get('recovery_epochs', 0):g}", "" if full is None else f"{full:.2f}",
                f"{sr['wall_seconds']:.0f}"]

    columns = ["", "file bytes", "ratio", "val acc", "test acc", "channel ratio", "sparsity", "candidates",
               "proxy epochs", "recovery epochs", "full-data epochs", "seconds"]
    strategies = c["strategies"]
    plot = Plot("search cost (training epochs)", "file bytes",
                [Series(n, [r["search"]["epochs"]], [r["file_bytes"]], "points") for n, r in strategies.items()],
                log_x=True)
    sections = [Section(f"compare-search on {c['checkpoint']} (target {_pct(c['target_accuracy'])})", columns,
                        [row(n, r) for n, r in strategies.items()], plot)]
    if c.get("ablation"):
        sections.append(Section(f"ablation ({c['ablation_strategy']})", columns,
                                [row(n, r) for n, r in c["ablation"].items()]))
    return sections


def _has(name: str) -> Callable[[Path], bool]:
    return lambda run: (run / name).exists()


def _is_prune_run(run: Path) -> bool:
    """A prune-channels summary has the model's state before and after pruning."""
    try:
        summary = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and "before" in summary


# run kind -> (how it is recognised, its sections); checked in order, first match wins
KINDS: dict[str, tuple[Callable[[Path], bool], Callable[[Path], list[Section]]]] = {
    "compare-search": (_has("compare.json"), _compare),
    "search": (_has("journal.sqlite"), _search),
    "dropnet": (_has("cycles.jsonl"), _dropnet),
    "prune-channels": (_is_prune_run, _prune_channels),
    "train": (_has("metrics.jsonl"), _train),
}


def run_kind(run: Path) -> str:
    if not run.is_dir():
        raise SlimzipError(f"{run}: not a run directory")
    for kind, (recognise, _) in KINDS.items():
        if recognise(run):
            return kind
    raise SlimzipError(f"{run}: not a slimzip run directory (from train, prune-channels, dropnet, compress --search "
                       "or compare-search)")


def sections_of(run: Path) -> tuple[str, list[Section]]:
    kind = run_kind(run)
    try:
        return kind, KINDS[kind][1](run)
    except (KeyError, TypeError, IndexError) as e:
        raise SlimzipError(f"{run}: a {kind} run with unexpected contents ({e.__class__.__name__}: {e})") from None


def to_text(sections: list[Section], max_rows: int = 20) -> str:
    """Fixed-width tables; long tables keep their first and last rows."""
    out = []
    for s in sections:
        rows = [[str(v) for v in r] for r in s.rows]
        if len(rows) > max_rows:
            half = max_rows // 2
            rows = rows[:half] + [["..."] * len(s.columns)] + rows[-half:]
        widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(s.columns)]
        out.append(f"## {s.title}")
        out.append("  ".join(c.rjust(w) for c, w in zip(s.columns, widths)))
        out += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows]
        out += s.notes
        out.append("")
    return "\n".join(out)


def _svg(plot: Plot) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for s in plot.series:
        marker = {"points": "o", "line": "-o", "star": "*"}[s.style]
        ax.plot(s.x, s.y, marker, markersize=10 if s.style == "star" else 3, label=s.name)
    if plot.hline is not None:
        ax.axhline(plot.hline, color="gray", linestyle="--", linewidth=1, label=plot.hline_label)
    for x, label in plot.vlines:
        ax.axvline(x, color="firebrick", linestyle=":", linewidth=1, label=label)
    if plot.log_x and any(x > 0 for s in plot.series for x in s.x):  # (no point: a budget line alone, linear)
        ax.set_xscale("log")
    if plot.y_min is not None:
        top = max([y for s in plot.series for y in s.y] + [plot.hline or plot.y_min])
        ax.set_ylim(plot.y_min, top + 0.1 * (top - plot.y_min))
    ax.set_xlabel(plot.x_label)
    ax.set_ylabel(plot.y_label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    return buffer.getvalue()[buffer.getvalue().index("<svg"):]


def to_html(title: str, sections: list[Section]) -> tuple[str, int]:
    """One self-contained HTML page (inline SVG plots); returns it and the number of plots drawn."""
    parts, plots = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
                    "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
                    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style>",
                    f"<h1>{html.escape(title)}</h1>"], 0
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2><table><tr>" +
                     "".join(f"<th>{html.escape(c)}</th>" for c in s.columns) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in s.rows]
        parts.append("</table>")
        parts += [f"<p>{html.escape(n)}</p>" for n in s.notes]
        if s.plot is not None and (svg := _svg(s.plot)) is not None:
            parts.append(svg)
            plots += 1
    return "\n".join(parts) + "\n", plots
