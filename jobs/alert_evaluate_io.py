"""Labelled series in, PNGs out, for `lakehouse alerts evaluate` (scoring: jobs.alert_evaluate).

Two input formats:

- NAB (Numenta Anomaly Benchmark): a CSV per series with header ``timestamp,value`` and a
  windows JSON mapping ``folder/file.csv`` to a list of ``[start, end]`` timestamps (both
  inclusive). A folder with ``labels/windows.json`` holds every series that file names. A
  series is one metric of one sensor: its value becomes that metric of the reading.
- Per-reading labels: a CSV with a timestamp column, a label column (1/0, true/false,
  yes/no) and either a ``value`` column (the chosen metric) or columns named after the
  metrics (temperature, humidity, pressure); an optional ``sensor_id`` column splits it into a
  series per sensor. Each run of labelled rows of a sensor (in file order) is one event, from
  its first to its last timestamp.

Timestamps: ISO 8601 (``2015-09-01 13:45:00``, ``…T…Z``, with an offset), UTC when no zone
is given, or epoch seconds. Empty, ``NA`` and ``nan`` values are missing (silver quarantines
such a reading); any other value that is not a number is an error naming file and line.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gold.alert_rules import METRICS, to_ms
from jobs.alert_evaluate import (
    Evaluation,
    LabelledSeries,
    SeriesResult,
    Window,
    alert_group,
)

logger = logging.getLogger(__name__)

WINDOWS_FILE = Path("labels") / "windows.json"
_MISSING = {"", "na", "nan", "null", "none"}
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


class LabelledDataError(ValueError):
    """A labelled input cannot be read; the message names the file and the line or key."""


def parse_time(text: str, where: str) -> int:
    """Epoch ms of an ISO 8601 timestamp (UTC if it has no zone) or of epoch seconds."""
    s = text.strip()
    try:
        if re.fullmatch(r"-?\d+(\.\d+)?", s):
            return int(round(float(s) * 1000))
        ts = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        raise LabelledDataError(f"{where}: cannot read timestamp {text!r} (expected ISO 8601 "
                                "such as 2015-09-01 13:45:00, or epoch seconds)") from None
    return to_ms(ts if ts.tzinfo else ts.replace(tzinfo=UTC))


def _value(text: str | None, where: str, column: str) -> float | None:
    s = (text or "").strip()
    if s.lower() in _MISSING:
        return None
    try:
        v = float(s)
    except ValueError:
        raise LabelledDataError(f"{where}: {column} {text!r} is not a number") from None
    return v if math.isfinite(v) else None


def _label(text: str | None, where: str, column: str) -> bool:
    s = (text or "").strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise LabelledDataError(f"{where}: {column} {text!r} is not a label (1/0, true/false)")


def _rows(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict]]]:
    """Header and (line number, row) of a CSV; refuses a file missing a required column."""
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise LabelledDataError(f"{path}: {exc.strerror}") from exc
    with fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in required if c not in header]
        if missing:
            raise LabelledDataError(f"{path}: no column {', '.join(missing)} "
                                    f"(header: {','.join(header) or 'empty'})")
        reader.fieldnames = header
        return header, [(i + 2, row) for i, row in enumerate(reader)]


def read_nab_csv(path: Path, *, metric: str, name: str, windows: Sequence[Window],
                 time_column: str = "timestamp", value_column: str = "value"
                 ) -> LabelledSeries:
    """One NAB series: ``value`` becomes ``metric``."""
    if metric not in METRICS:
        raise LabelledDataError(f"metric must be one of {METRICS}, got {metric!r}")
    _, rows = _rows(path, (time_column, value_column))
    times, values = [], []
    for line, row in rows:
        where = f"{path}:{line}"
        times.append(parse_time(row[time_column] or "", where))
        values.append(_value(row[value_column], where, value_column))
    return LabelledSeries(name, tuple(times), {metric: tuple(values)}, tuple(windows))


def read_windows(path: Path) -> dict[str, tuple[Window, ...]]:
    """NAB windows JSON: {"folder/file.csv": [[start, end], ...], ...}."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LabelledDataError(f"{path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise LabelledDataError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise LabelledDataError(f"{path}: expected an object of series -> windows")
    out: dict[str, tuple[Window, ...]] = {}
    for key, pairs in raw.items():
        where = f"{path}: {key}"
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 for p in pairs):
            raise LabelledDataError(f"{where}: expected a list of [start, end] pairs")
        try:
            out[key] = tuple(Window(parse_time(str(a), where), parse_time(str(b), where))
                             for a, b in pairs)
        except ValueError as exc:
            raise LabelledDataError(f"{where}: {exc}") from exc
    return out


def load_nab_folder(folder: Path, *, metric: str, windows_file: Path | None = None
                    ) -> list[LabelledSeries]:
    """Every series the windows file of a NAB folder names (sorted by key)."""
    wpath = windows_file or folder / WINDOWS_FILE
    if not wpath.is_file():
        raise LabelledDataError(f"{folder}: no {WINDOWS_FILE} (pass --windows FILE)")
    windows = read_windows(wpath)
    out = []
    for key in sorted(windows):
        csv_path = folder / key
        if not csv_path.is_file():
            raise LabelledDataError(f"{wpath}: names {key}, which {folder} does not hold")
        out.append(read_nab_csv(csv_path, metric=metric, name=key.removesuffix(".csv"),
                                windows=windows[key]))
    return out


def _windows_for(path: Path, windows: dict[str, tuple[Window, ...]]) -> tuple[Window, ...]:
    posix = path.as_posix()
    keys = [k for k in windows if posix == k or posix.endswith("/" + k)]
    if not keys:
        keys = [k for k in windows if Path(k).name == path.name]
    if len(keys) != 1:
        found = "no entry" if not keys else f"{len(keys)} entries ({', '.join(keys)})"
        raise LabelledDataError(f"windows file has {found} for {path}")
    return windows[keys[0]]


def load_labelled_csv(path: Path, *, metric: str, label_column: str = "label",
                      time_column: str = "timestamp", value_column: str = "value"
                      ) -> list[LabelledSeries]:
    """Per-reading labels: a series per sensor, an event per run of labelled rows."""
    header, rows = _rows(path, (time_column, label_column))
    if value_column in header:
        columns = {metric: value_column}
    else:
        columns = {m: m for m in METRICS if m in header}
    if not columns:
        raise LabelledDataError(f"{path}: no column {value_column} and none of "
                                f"{', '.join(METRICS)} (header: {','.join(header)})")
    by_sensor: dict[str, list[tuple[int, dict[str, float | None], bool]]] = {}
    for line, row in rows:
        where = f"{path}:{line}"
        sensor = (row.get("sensor_id") or "").strip() if "sensor_id" in header else ""
        vals = {m: _value(row[c], where, c) for m, c in columns.items()}
        by_sensor.setdefault(sensor, []).append(
            (parse_time(row[time_column] or "", where), vals, _label(row[label_column], where,
                                                                     label_column)))
    out = []
    for sensor in sorted(by_sensor):
        items = by_sensor[sensor]
        events: list[Window] = []
        run: list[int] = []
        for t, _, labelled in [*items, (0, {}, False)]:
            if labelled:
                run.append(t)
            elif run:
                events.append(Window(min(run), max(run)))
                run = []
        name = path.stem if not sensor else f"{path.stem}:{sensor}"
        out.append(LabelledSeries(
            name, tuple(t for t, _, _ in items),
            {m: tuple(v[m] for _, v, _ in items) for m in columns}, tuple(events)))
    return out


def load(paths: Sequence[Path], *, metric: str, windows_file: Path | None = None,
         label_column: str = "label") -> list[LabelledSeries]:
    """Series of every path: a NAB folder, a CSV with a label column, or a NAB CSV (whose
    windows come from ``windows_file``)."""
    out: list[LabelledSeries] = []
    windows: dict[str, tuple[Window, ...]] | None = None
    for path in paths:
        if path.is_dir():
            out += load_nab_folder(path, metric=metric, windows_file=windows_file)
            continue
        header, _ = _rows(path, ())
        if label_column in header:
            out += load_labelled_csv(path, metric=metric, label_column=label_column)
            continue
        if windows_file is None:
            raise LabelledDataError(f"{path}: no column {label_column} and no --windows file "
                                    "for its labelled windows")
        windows = windows if windows is not None else read_windows(windows_file)
        out.append(read_nab_csv(path, metric=metric, name=path.stem,
                                windows=_windows_for(path, windows)))
    names = [s.name for s in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise LabelledDataError(f"series named twice: {', '.join(dupes)}")
    return out


# --- plots --------------------------------------------------------------------------------

# Marker by alert group, colour by alert type.
_MARKERS: dict[str, str] = {"static": "x", "statistical": "o", "other": "^"}


def plot_file(out_dir: Path, name: str) -> Path:
    return out_dir / (re.sub(r"[^A-Za-z0-9._-]+", "_", name) + ".png")


def write_plots(ev: Evaluation, out_dir: Path) -> list[Path]:
    """One PNG per series: the values the rules saw, labelled windows shaded, alerts marked
    by type (the marker says the group), each at the series' value at its event time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for r in ev.results:
        paths.append(_plot(r, plot_file(out_dir, r.series.name), plt))
        logger.info("plot %s", paths[-1])
    return paths


def _plot(r: SeriesResult, path: Path, plt: Any) -> Path:
    import bisect

    from gold.alert_rules import from_ms

    metric = r.series.metrics[0]
    fig, ax = plt.subplots(figsize=(12, 4))
    kept = r.prepared.readings
    ax.plot([from_ms(x.t_ms) for x in kept], [x.value(metric) for x in kept], lw=0.7,
            color="tab:blue", label=f"{metric} ({len(kept):,} readings)")
    bad = [x for x in r.prepared.quarantined if x.value(metric) is not None]
    if bad:
        ax.scatter([from_ms(x.t_ms) for x in bad], [x.value(metric) for x in bad], s=4,
                   color="0.6", label=f"quarantined ({len(r.prepared.quarantined):,})")
    for i, w in enumerate(r.series.windows):
        ax.axvspan(from_ms(w.start_ms), from_ms(w.end_ms), color="tab:green", alpha=0.15,
                   label="labelled window" if i == 0 else None)
    times = [x.t_ms for x in kept]
    kinds = sorted({a.alert_type for a in r.alerts}, key=lambda k: (alert_group(k), k))
    colours = plt.get_cmap("tab10")
    for n, kind in enumerate(kinds if kept else []):
        pts = []
        for a in r.alerts:
            if a.alert_type == kind:
                t = to_ms(a.event_time)
                i = min(max(bisect.bisect_right(times, t) - 1, 0), len(kept) - 1)
                pts.append((a.event_time, kept[i].value(metric)))
        xs, ys = zip(*pts, strict=True)
        marker = _MARKERS[alert_group(kind)]
        colour = colours(n % 10)
        style = ({"facecolors": "none", "edgecolors": colour} if marker == "o"
                 else {"color": colour})
        ax.scatter(xs, ys, s=28, zorder=3, marker=marker,
                   label=f"{kind} ({alert_group(kind)}, {len(pts):,})", **style)
    s = r.groups["all"]
    ax.set_title(f"{r.series.name}: {s.hit}/{s.events} events hit, {s.alerts:,} alerts, "
                 f"{s.false_per_day or 0:.2f} false/day")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
