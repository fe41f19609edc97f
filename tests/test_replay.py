"""Replay of real data: the committed Beijing slice, a generic CSV, and the real files if present.

Data: Beijing Multi-Site Air-Quality Data (UCI ML Repository, dataset 501), CC BY 4.0 —
Zhang, Guo, Dong, He, Xu & Chen, Proc. R. Soc. A 473 (2017) 20170457 (see
tests/fixtures/beijing-prsa/README.md).
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.commands import DEFAULT_SHARED_DATA
from generator.replay import (
    ATTRIBUTION,
    BEIJING_DIR,
    ReplayStats,
    beijing_files,
    parse_mapping,
    read_beijing,
    read_mapped_csv,
    relative_humidity,
    replay_messages,
)
from jobs.cli import cli

FIXTURES = Path(__file__).parent / "fixtures"


def _rows(station: str) -> list[dict[str, str]]:
    path = next((FIXTURES / BEIJING_DIR).glob(f"PRSA_Data_{station}_*.csv"))
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(
    ("temp", "dew", "rh"),
    [(20.0, 20.0, 100.0), (20.0, 10.0, 52.5), (30.0, 15.0, 40.2), (-5.0, -20.0, 29.8)],
)
def test_magnus_relative_humidity(temp: float, dew: float, rh: float) -> None:
    assert relative_humidity(temp, dew) == pytest.approx(rh, abs=0.15)


def test_beijing_slice_replays_both_stations_in_event_time_order() -> None:
    stats = ReplayStats()
    readings = list(read_beijing(FIXTURES, None, stats))
    raw = _rows("Aotizhongxin") + _rows("Dingling")
    incomplete = [r for r in raw if "NA" in (r["TEMP"], r["PRES"], r["DEWP"])]
    assert stats.rows == len(raw) == 400
    assert len(incomplete) > 0 and sum(stats.skipped.values()) == len(incomplete)
    assert stats.readings == len(readings) == 400 - len(incomplete)
    assert {r.sensor_id for r in readings} == {"BEIJING_AOTIZHONGXIN", "BEIJING_DINGLING"}
    assert {r.location for r in readings} == {"Beijing - Aotizhongxin", "Beijing - Dingling"}
    times = [r.event_ms for r in readings]
    assert times == sorted(times)


def test_beijing_rows_map_to_wire_messages_in_utc() -> None:
    first = _rows("Aotizhongxin")[0]
    messages = list(replay_messages(read_beijing(FIXTURES, ["Aotizhongxin"], ReplayStats()), 5))
    assert len(messages) == 5
    body = json.loads(messages[0].value)
    assert messages[0].key == b"BEIJING_AOTIZHONGXIN" and messages[0].fault is None
    # 2015-01-23 17:00 in Beijing (UTC+8) is 09:00 UTC
    assert (first["year"], first["month"], first["day"], first["hour"]) == ("2015", "1", "23",
                                                                           "17")
    assert body["timestamp"] == "2015-01-23T09:00:00.000Z"
    assert messages[0].event_time == datetime(2015, 1, 23, 9, tzinfo=UTC)
    assert body["temperature"] == float(first["TEMP"])
    assert body["pressure"] == float(first["PRES"])
    assert body["humidity"] == round(relative_humidity(float(first["TEMP"]),
                                                       float(first["DEWP"])), 2)
    assert set(body) == {"sensor_id", "timestamp", "temperature", "humidity", "pressure",
                         "location"}
    hours = [(m.event_time - messages[0].event_time).total_seconds() / 3600 for m in messages]
    assert hours == [0, 1, 2, 3, 4]


def test_station_filter_and_unknown_station() -> None:
    assert [f.name.split("_")[2] for f in beijing_files(FIXTURES, ["dingling"])] == ["Dingling"]
    with pytest.raises(FileNotFoundError, match="nowhere"):
        beijing_files(FIXTURES, ["Nowhere"])
    with pytest.raises(FileNotFoundError, match="PRSA_Data"):
        beijing_files(FIXTURES / "missing", None)


def test_generic_csv_through_a_column_mapping(tmp_path: Path) -> None:
    path = tmp_path / "site-7.csv"
    path.write_text(
        "when,t,dew,p,where\n"
        "2024-03-01T10:05:00Z,21.5,11.0,1012.5,Lab\n"
        "2024-03-01T10:00:00,21.0,11.0,1012.0,Lab\n"
        "2024-03-01T10:10:00+01:00,NA,11.0,1012.0,Lab\n"
    )
    mapping = parse_mapping("when=timestamp,t=temperature,dew=dewpoint,p=pressure,"
                            "where=location")
    stats = ReplayStats()
    readings = list(read_mapped_csv(path, mapping, stats))
    assert stats.rows == 3 and stats.readings == 2 and sum(stats.skipped.values()) == 1
    assert [r.sensor_id for r in readings] == ["SITE_7", "SITE_7"]
    assert [r.temperature for r in readings] == [21.0, 21.5]  # sorted by event time
    assert readings[0].event_ms == int(datetime(2024, 3, 1, 10, tzinfo=UTC).timestamp() * 1000)
    assert readings[0].humidity == pytest.approx(relative_humidity(21.0, 11.0), abs=0.01)
    with pytest.raises(ValueError, match="field"):
        parse_mapping("t=temp")
    with pytest.raises(ValueError, match="no column"):
        list(read_mapped_csv(path, {"nope": "temperature"}, ReplayStats()))


def test_replay_command_streams_the_slice_with_attribution(tmp_path: Path) -> None:
    args = ["--set", f"paths.data_dir={tmp_path / 'data'}", "replay", "beijing",
            "--data-dir", str(FIXTURES), "--rate", "100000", "--sink", "files",
            "--out", str(tmp_path / "out"), "--limit", "150"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert ATTRIBUTION in res.output and "CC BY 4.0" in res.output
    assert "skipped" in res.output and "sent 150 messages" in res.output
    lines = [json.loads(v) for f in sorted((tmp_path / "out").iterdir())
             for v in f.read_bytes().splitlines()]
    assert len(lines) == 150
    assert [x["timestamp"] for x in lines] == sorted(x["timestamp"] for x in lines)


def test_default_data_dir_is_relative_to_the_repository() -> None:
    repo = Path(__file__).resolve().parents[1]
    assert DEFAULT_SHARED_DATA == repo.parent / "shared" / "data"


@pytest.mark.skipif(not (DEFAULT_SHARED_DATA / BEIJING_DIR).is_dir(),
                    reason="the shared Beijing data is not beside this checkout")
def test_real_beijing_files_replay() -> None:
    files = beijing_files(DEFAULT_SHARED_DATA)
    assert len(files) == 12
    stats = ReplayStats()
    messages = list(replay_messages(read_beijing(DEFAULT_SHARED_DATA, None, stats), 2400))
    assert len(messages) == 2400
    assert len({m.sensor_id for m in messages}) == 12
    first = min(m.event_time for m in messages if m.event_time)
    # the data begins 2013-03-01 00:00 Beijing time = 2013-02-28 16:00 UTC
    assert first == datetime(2013, 2, 28, 16, tzinfo=UTC)
    times = [m.event_time for m in messages]
    assert times == sorted(times)
    for m in messages:
        body = json.loads(m.value)
        assert -50 <= body["temperature"] <= 50 and 0 <= body["humidity"] <= 100
        assert 870 <= body["pressure"] <= 1085
