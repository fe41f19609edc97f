"""`lakehouse alerts evaluate`: the rules scored on labelled series (no Spark, no Kafka).

Hand-built series with a known rule outcome, the chance baseline on cases worked out by hand,
the NAB and per-reading-label loaders on files written here, and bad inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from gold.alert_rules import to_ms
from jobs.alert_evaluate import (
    DAY_MS,
    EXACT_MAX_EVENTS,
    LabelledSeries,
    Window,
    chance_pmf,
    combine,
    evaluate,
    prepare,
    quiet_band,
    run_rules,
    score,
)
from jobs.alert_evaluate_io import (
    LabelledDataError,
    load,
    load_labelled_csv,
    load_nab_folder,
    parse_time,
    read_nab_csv,
)
from jobs.cli import cli
from jobs.config import load_config

CFG = load_config(env={}, overrides={"alerts.profile": "seed"})
T0 = datetime(2024, 3, 1, tzinfo=UTC)
MIN_MS = 60_000


def ms(minutes: float) -> int:
    return to_ms(T0) + int(minutes * MIN_MS)


def spiky_day(spikes: dict[int, float], *, windows: tuple[Window, ...]) -> LabelledSeries:
    """One day of temperature every 2 minutes (minutes 0..1440), 20 °C but at ``spikes``.

    Two minutes apart no reading is within rapid_change.within_s (60 s) of another, and a
    flat trailing window has no spread, so the static thresholds are the only rules that can
    fire on a spike."""
    minutes = range(0, 1441, 2)
    return LabelledSeries("day", tuple(ms(m) for m in minutes),
                          {"temperature": tuple(spikes.get(m, 20.0) for m in minutes)}, windows)


def test_static_spike_inside_a_window_is_a_hit_and_one_outside_a_false_alert_per_day() -> None:
    window = Window(ms(290), ms(310))
    series = spiky_day({300: 35.0, 1000: 35.0}, windows=(window,))
    ev = evaluate([series], CFG)
    (result,) = ev.results
    assert [(a.alert_type, to_ms(a.event_time)) for a in result.alerts] == [
        ("HIGH_TEMP", ms(300)), ("HIGH_TEMP", ms(1000))]
    s = result.groups["all"]
    assert (s.alerts, s.inside, s.false_alerts, s.events, s.hit) == (2, 1, 1, 1, 1)
    assert s.span_ms == DAY_MS
    assert s.false_per_day == pytest.approx(1.0)
    assert s.false_per_hour == pytest.approx(1 / 24)
    assert s.share_inside == pytest.approx(0.5)
    # Two random alerts miss a 20-minute window of a 1440-minute day with (1 - 20/1440)^2.
    assert s.chance_hits == pytest.approx(1 - (1 - 20 / 1440) ** 2)
    assert s.p_value == pytest.approx(1 - (1 - 20 / 1440) ** 2)
    assert result.groups["static"].hit == 1 and result.groups["statistical"].alerts == 0
    assert set(result.types) == {"HIGH_TEMP"} and ev.types["HIGH_TEMP"].alerts == 2
    assert ev.groups["all"].false_per_day == pytest.approx(1.0)


def test_window_ends_are_inclusive_and_a_spike_just_outside_misses() -> None:
    inside = evaluate([spiky_day({300: 35.0}, windows=(Window(ms(300), ms(300)),))], CFG)
    assert inside.groups["all"].hit == 1
    outside = evaluate([spiky_day({302: 35.0}, windows=(Window(ms(290), ms(300)),))], CFG)
    assert (outside.groups["all"].hit, outside.groups["all"].false_alerts) == (0, 1)


def test_quiet_series_raises_nothing_and_the_filled_metrics_never_alert() -> None:
    ev = evaluate([spiky_day({}, windows=(Window(ms(100), ms(200)),))], CFG)
    s = ev.groups["all"]
    assert (s.alerts, s.hit, s.chance_hits, s.p_value) == (0, 0, 0.0, 1.0)
    lo, hi = quiet_band(CFG, "humidity")
    assert (lo, hi) == (0.0, CFG.alerts.high_humidity.threshold)


def test_rules_see_what_silver_passes_once_each() -> None:
    """Out of range is quarantined (never reaches the rules), a repeated timestamp is kept
    once (the first), and a gap raises SENSOR_OFFLINE and SENSOR_RECOVERED as in the stream."""
    times = (ms(0), ms(5), ms(5), ms(10), ms(40))
    series = LabelledSeries("s", times, {"temperature": (20.0, 21.0, 22.0, 80.0, 20.0)}, ())
    prep = prepare(series, CFG)
    assert [(r.t_ms, r.temperature) for r in prep.readings] == [
        (ms(0), 20.0), (ms(5), 21.0), (ms(40), 20.0)]
    assert [r.temperature for r in prep.quarantined] == [80.0]
    assert prep.duplicates == 1
    assert prep.readings[0].humidity == pytest.approx(40.0)  # middle of the quiet band
    alerts = run_rules("s", prep.readings, CFG)
    assert [(a.alert_type, to_ms(a.event_time)) for a in alerts] == [
        ("SENSOR_OFFLINE", ms(5) + CFG.alerts.offline.after_s * 1000),
        ("SENSOR_RECOVERED", ms(40))]


def test_scale_fit_maps_other_units_into_the_quiet_band() -> None:
    series = LabelledSeries("bytes", (ms(0), ms(1), ms(2)),
                            {"temperature": (100.0, 5e8 + 50, 1e9)}, ())
    assert prepare(series, CFG).readings == ()
    fitted = prepare(series, CFG, scale="fit").readings
    lo, hi = quiet_band(CFG, "temperature")
    assert [r.temperature for r in fitted] == pytest.approx([lo, (lo + hi) / 2, hi])
    kinds = {a.alert_type for a in run_rules("bytes", fitted, CFG)}
    assert kinds == {"RAPID_CHANGE"}  # 10 °C a minute apart; no static threshold at the ends


# --- chance ---------------------------------------------------------------------------------


def test_chance_by_hand_two_quarter_windows_two_alerts() -> None:
    """Windows of a quarter of the span each, 2 alerts: both miss with (1/2)^2, each lands in
    a different window with 2 * 1/4 * 1/4."""
    span = (0, 400)
    windows = [Window(0, 100), Window(200, 300)]
    pmf = chance_pmf(windows, 2, span)
    assert pmf == pytest.approx([1 / 4, 5 / 8, 1 / 8])
    s = score([250, 350], windows, span)
    assert (s.hit, s.inside) == (1, 1)
    assert s.p_value == pytest.approx(3 / 4)
    assert s.chance_hits == pytest.approx(5 / 8 + 2 / 8)
    assert score([50, 250], windows, span).p_value == pytest.approx(1 / 8)


def test_chance_of_overlapping_windows_counts_each_hit_once_per_window() -> None:
    pmf = chance_pmf([Window(0, 50), Window(0, 50)], 1, (0, 100))
    assert pmf == pytest.approx([1 / 2, 0, 1 / 2])


def test_chance_sampled_beyond_the_exact_limit_agrees_with_the_expectation() -> None:
    k = EXACT_MAX_EVENTS + 3
    windows = [Window(100 * i, 100 * i + 10) for i in range(k)]
    span, n = (0, 100 * k), 20
    pmf = chance_pmf(windows, n, span, seed=7, draws=20_000)
    expected = k * (1 - (1 - 10 / (100 * k)) ** n)
    assert float(np.dot(np.arange(k + 1), pmf)) == pytest.approx(expected, rel=0.02)
    again = chance_pmf(windows, n, span, seed=7, draws=20_000)
    assert np.array_equal(pmf, again)  # seeded: the same figure every run


def test_overall_chance_is_the_convolution_of_independent_series() -> None:
    one = score([50], [Window(0, 50)], (0, 100))       # pmf [1/2, 1/2], hit 1
    two = score([10], [Window(0, 25)], (0, 100))       # pmf [3/4, 1/4], hit 1
    both = combine([one, two])
    assert both.chance == pytest.approx([3 / 8, 1 / 2, 1 / 8])
    assert (both.hit, both.events, both.alerts) == (2, 2, 2)
    assert both.p_value == pytest.approx(1 / 8)


# --- loaders --------------------------------------------------------------------------------


def write_nab(root: Path) -> Path:
    (root / "labels").mkdir(parents=True)
    (root / "realThing").mkdir()
    (root / "realThing" / "a.csv").write_text(
        "timestamp,value\n2015-09-01 00:00:00,20\n2015-09-01 00:02:00,20\n"
        "2015-09-01 00:02:00,21\n2015-09-01 00:04:00,35\n2015-09-01 00:06:00,20\n")
    (root / "labels" / "windows.json").write_text(json.dumps({
        "realThing/a.csv": [["2015-09-01 00:03:00.000000", "2015-09-01 00:05:00.000000"]]}))
    return root


def test_nab_folder_loader_reads_series_and_windows(tmp_path: Path) -> None:
    (series,) = load_nab_folder(write_nab(tmp_path / "nab"), metric="humidity")
    t = to_ms(datetime(2015, 9, 1, tzinfo=UTC))
    assert series.name == "realThing/a"
    assert series.times_ms == (t, t + 2 * MIN_MS, t + 2 * MIN_MS, t + 4 * MIN_MS,
                               t + 6 * MIN_MS)
    assert series.values == {"humidity": (20.0, 20.0, 21.0, 35.0, 20.0)}
    assert series.windows == (Window(t + 3 * MIN_MS, t + 5 * MIN_MS),)


def test_labelled_csv_events_are_runs_of_labelled_readings(tmp_path: Path) -> None:
    path = tmp_path / "motes.csv"
    path.write_text("timestamp,sensor_id,temperature,humidity,label\n"
                    "2024-03-01T00:00:00Z,m1,20,40,0\n2024-03-01T00:00:05Z,m1,31,40,1\n"
                    "2024-03-01T00:00:10Z,m1,32,NA,1\n2024-03-01T00:00:15Z,m1,20,40,0\n"
                    "2024-03-01T00:00:20Z,m1,20,40,true\n2024-03-01T00:00:00Z,m2,20,40,0\n")
    m1, m2 = load_labelled_csv(path, metric="temperature")
    t = to_ms(T0)
    assert (m1.name, m2.name) == ("motes:m1", "motes:m2")
    assert m1.windows == (Window(t + 5000, t + 10000), Window(t + 20000, t + 20000))
    assert m1.values["humidity"][2] is None and m2.windows == ()
    ev = evaluate([m1, m2], CFG)
    assert ev.types["HIGH_TEMP"].alerts == 1  # the NA humidity reading is quarantined
    assert ev.groups["static"].hit == 1 and ev.groups["static"].events == 2


@pytest.mark.parametrize(("text", "message"), [
    ("time,value\n2015-09-01 00:00:00,1\n", "no column timestamp"),
    ("timestamp,reading\n2015-09-01 00:00:00,1\n", "no column value"),
    ("timestamp,value\n2015-09-01 00:00:00,1\nyesterday noon,2\n",
     "a.csv:3: cannot read timestamp 'yesterday noon'"),
    ("timestamp,value\n2015-09-01 00:00:00,warm\n", "a.csv:2: value 'warm' is not a number"),
])
def test_bad_nab_csv_is_refused_with_file_and_line(tmp_path: Path, text: str,
                                                   message: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text(text)
    with pytest.raises(LabelledDataError, match=message):
        read_nab_csv(path, metric="temperature", name="a", windows=())


def test_bad_windows_and_labels_are_refused(tmp_path: Path) -> None:
    root = write_nab(tmp_path / "nab")
    (root / "labels" / "windows.json").write_text(json.dumps({
        "realThing/a.csv": [["2015-09-01 00:05:00", "2015-09-01 00:03:00"]]}))
    with pytest.raises(LabelledDataError, match="window ends before it starts"):
        load_nab_folder(root, metric="temperature")
    (root / "labels" / "windows.json").write_text(json.dumps({"realThing/b.csv": []}))
    with pytest.raises(LabelledDataError, match="names realThing/b.csv"):
        load_nab_folder(root, metric="temperature")
    labels = tmp_path / "l.csv"
    labels.write_text("timestamp,value,label\n2024-03-01T00:00:00Z,1,maybe\n")
    with pytest.raises(LabelledDataError, match="l.csv:2: label 'maybe' is not a label"):
        load([labels], metric="temperature")
    with pytest.raises(LabelledDataError, match="no column label and no --windows"):
        load([root / "realThing" / "a.csv"], metric="temperature")


def test_parse_time_zones() -> None:
    assert parse_time("2024-03-01 00:00:00", "x") == to_ms(T0)
    assert parse_time("2024-03-01T01:00:00+01:00", "x") == to_ms(T0)
    assert parse_time(str(to_ms(T0) // 1000), "x") == to_ms(T0)


# --- the command ----------------------------------------------------------------------------


def test_cli_table_json_and_plots(tmp_path: Path) -> None:
    root = write_nab(tmp_path / "nab")
    base = ["--set", f"paths.data_dir={tmp_path / 'data'}", "alerts", "evaluate", str(root)]
    runner = CliRunner()
    table = runner.invoke(cli, [*base, "--by-type"])
    assert table.exit_code == 0, table.output
    assert "| realThing/a | 4 | 0 | 0.0 | 1 | 1/1 | 100.0 % |" in table.stdout
    assert "HIGH_TEMP (static)" in table.stdout
    plots = tmp_path / "plots"
    out = runner.invoke(cli, [*base, "--json", "--plots", str(plots)])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    (series,) = doc["series"]
    assert series["duplicates"] == 1 and series["groups"]["static"]["hit"] == 1
    assert doc["overall"]["types"]["HIGH_TEMP"]["alerts"] == 1
    assert (plots / "realThing_a.png").read_bytes()[:4] == b"\x89PNG"
    bad = root / "realThing" / "a.csv"
    bad.write_text("timestamp,value\nnot a time,1\n")
    failed = runner.invoke(cli, base)
    assert failed.exit_code == 1 and "a.csv:2: cannot read timestamp" in failed.output


def test_sensor_day_span_counts_quarantined_rows() -> None:
    """The sensor reported over the whole file: its span is the exposure, not just the
    readings that passed silver."""
    t = (ms(0), ms(60 * 12), ms(60 * 24))
    series = LabelledSeries("s", t, {"temperature": (99.0, 20.0, 99.0)}, ())
    (result,) = evaluate([series], CFG).results
    assert result.groups["all"].span_ms == DAY_MS
    assert len(result.prepared.readings) == 1
