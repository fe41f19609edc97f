"""Every `lakehouse` failure ends in one line on stderr and a non-zero exit, never a traceback.

The commands run as the user runs them (`python -m jobs.cli` in a subprocess) against a data
folder of their own and a free local port with nothing listening: no Spark, no broker.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import broker, cli
from jobs.config import ENV_OVERRIDES, REPO_ROOT, ConfigError

pytestmark = pytest.mark.timeout(120)

# Without the connect check, a producer or admin client waits 30 s for a broker that is down.
BROKER_DOWN_BOUND_S = 12.0


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    """The user's environment without the project's variables, a private data folder and a
    bootstrap address where nothing listens."""
    out = {k: v for k, v in os.environ.items()
           if k not in ENV_OVERRIDES and k != "LAKEHOUSE_CONFIG"}
    out["LAKEHOUSE_DATA"] = str(tmp_path / "data")
    out["KAFKA_BOOTSTRAP"] = f"127.0.0.1:{broker.free_port_pair()}"
    return out


def lakehouse(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=90, check=False)
    return proc, time.monotonic() - start


def one_line_failure(proc: subprocess.CompletedProcess[str], code: int, pattern: str) -> str:
    """The single stderr line of a failed command, checked against ``pattern``."""
    err = proc.stderr
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert proc.returncode == code, f"exit {proc.returncode}, expected {code}: {err}"
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


@pytest.mark.parametrize(("extra_env", "args", "pattern"), [
    ({"KAFKA_BOOTSTRAP": "nohost"}, ["status"],
     r"^Error: \$KAFKA_BOOTSTRAP: kafka\.bootstrap: 'nohost' is not host:port \(e\.g\. "
     r"127\.0\.0\.1:9092"),
    ({"LAKEHOUSE_LOG_LEVEL": "LOUD"}, ["status"],
     r"^Error: \$LAKEHOUSE_LOG_LEVEL: log_level: 'LOUD' is not one of DEBUG, INFO, WARNING"),
    ({}, ["--log-level", "LOUD", "status"],
     r"^Error: --log-level: log_level: 'LOUD' is not one of DEBUG, INFO"),
    ({}, ["--set", "spark.shuffle_partitions=0", "status"],
     r"^Error: --set: spark\.shuffle_partitions: 0 must be >= 1$"),
    ({}, ["--set", "streaming.trigger_interval=soon", "query", "select 1"],
     r"^Error: --set: streaming\.trigger_interval: 'soon' is not an interval"),
    ({}, ["--set", "streaming.triggers.bronz=1 second", "status"],
     r"^Error: --set: streaming\.triggers: unknown key 'bronz'; known: bronze"),
    ({}, ["--set", "maintenance.retention_hours=24", "maintain"],
     r"^Error: --set: maintenance\.retention_hours: 24\.0 must be >= 168"),
    ({}, ["--set", "kafka.bootstrap=127.0.0.1:99999", "topics", "create"],
     r"^Error: --set: kafka\.bootstrap: '127\.0\.0\.1:99999' is not host:port"),
    ({}, ["--config", "/nonexistent/pipeline.yaml", "status"],
     r"^Error: config file not found: /nonexistent/pipeline\.yaml$"),
])
def test_bad_configuration_is_one_line_and_exit_2(env: dict[str, str], extra_env: dict[str, str],
                                                  args: list[str], pattern: str) -> None:
    proc, _ = lakehouse({**env, **extra_env}, *args)
    one_line_failure(proc, 2, pattern)


def test_a_typo_in_the_config_file_names_file_and_key(env: dict[str, str],
                                                      tmp_path: Path) -> None:
    conf = tmp_path / "pipeline.yaml"
    conf.write_text((REPO_ROOT / "conf" / "pipeline.yaml").read_text()
                    .replace("  watermark: 10 minutes", "  watermark: 10 minuets"))
    proc, _ = lakehouse(env, "--config", str(conf), "status")
    one_line_failure(proc, 2, rf"^Error: {re.escape(str(conf))}: streaming\.watermark: "
                              r"'10 minuets' is not an interval")


@pytest.mark.parametrize("args", [
    ["--set", "x", "status"],
    ["query"],
    ["query", "--version", "x", "select 1"],
    ["no-such-command"],
])
def test_a_usage_error_is_one_line_and_exit_2(env: dict[str, str], args: list[str]) -> None:
    proc, _ = lakehouse(env, *args)
    one_line_failure(proc, 2, r"^Error: .* \(see `lakehouse.* --help`\)$")


def test_a_bare_group_still_shows_its_help(env: dict[str, str]) -> None:
    proc, _ = lakehouse(env, "kafka")
    assert proc.returncode == 2 and not proc.stderr.startswith("Error"), proc.stderr
    assert "Commands:" in proc.stdout + proc.stderr and "start" in proc.stdout + proc.stderr


@pytest.mark.parametrize("args", [
    ["generate", "--count", "10", "--sensors", "2"],
    ["topics", "create"],
    ["alerts", "tail", "--idle", "1"],
    ["replay", "beijing", "--limit", "5"],
])
def test_broker_down_fails_fast_naming_bootstrap_and_the_fix(env: dict[str, str],
                                                             args: list[str]) -> None:
    proc, took = lakehouse(env, *args)
    one_line_failure(proc, 1, rf"^Error: no Kafka broker answers at "
                              rf"{re.escape(env['KAFKA_BOOTSTRAP'])}: start it with "
                              r"`lakehouse kafka start`")
    assert took < BROKER_DOWN_BOUND_S, f"{args} took {took:.1f} s with the broker down"


def test_alerts_score_without_the_table(env: dict[str, str], tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    truth.write_text("")
    proc, _ = lakehouse(env, "alerts", "score", "--truth", str(truth))
    one_line_failure(proc, 1, r"^Error: no Delta table at .*/gold/alerts \(no _delta_log\): "
                              r"gold/alerts is written by `lakehouse run`")


def test_query_with_bad_sql_is_duckdbs_message_in_one_line(env: dict[str, str]) -> None:
    proc, _ = lakehouse(env, "query", "SELEC 1")
    line = one_line_failure(proc, 1, r'^Error: Parser Error: syntax error at or near "SELEC"')
    assert "LINE 1" not in line and "^" not in line


def test_query_on_a_missing_table_says_which_views_are_missing(env: dict[str, str]) -> None:
    proc, _ = lakehouse(env, "query", "SELECT count(*) FROM alerts")
    one_line_failure(proc, 1, r"^Error: Catalog Error: Table with name alerts does not exist!"
                              r".*\(no view for: .*alerts.*\(not created yet\)\)$")


def test_history_of_a_missing_table(env: dict[str, str]) -> None:
    proc, _ = lakehouse(env, "history", "alerts")
    one_line_failure(proc, 1, r"^Error: no Delta table at .*/gold/alerts \(no _delta_log\)$")
    proc, _ = lakehouse(env, "history", "nosuch")
    one_line_failure(proc, 1, r"^Error: unknown table 'nosuch'; known: alert_counts_5m")


def test_a_good_command_still_succeeds(env: dict[str, str]) -> None:
    proc, _ = lakehouse(env, "query", "SELECT 41 + 1 AS answer")
    assert proc.returncode == 0, proc.stderr
    assert "42" in proc.stdout


# --- the policy itself, in process: an unexpected error and --debug ------------------------


def _main(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], *args: str) -> int:
    for var in (*ENV_OVERRIDES, "LAKEHOUSE_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LAKEHOUSE_DATA", env["LAKEHOUSE_DATA"])
    monkeypatch.setattr(sys, "argv", ["lakehouse", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    return int(info.value.code or 0)


def test_an_unexpected_error_is_its_type_and_message_and_the_debug_hint(
        monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
        capsys: pytest.CaptureFixture[str]) -> None:
    import jobs.status

    def boom(cfg: object) -> None:
        raise KeyError("no such partition\nsecond line")

    monkeypatch.setattr(jobs.status, "collect", boom)
    assert _main(monkeypatch, env, "status") == 1
    err = capsys.readouterr().err.strip()
    assert err == ("Error: KeyError: 'no such partition\\nsecond line' "
                   "(run with --debug for the traceback)"), err
    with pytest.raises(KeyError, match="no such partition"):
        _main(monkeypatch, env, "--debug", "status")


def test_a_config_error_inside_a_command_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                 env: dict[str, str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import jobs.status

    def bad(cfg: object) -> None:
        raise ConfigError("streaming.source: 'mqtt' is not one of kafka, files, socket")

    monkeypatch.setattr(jobs.status, "collect", bad)
    assert _main(monkeypatch, env, "status") == 2
    assert capsys.readouterr().err.strip() == \
        "Error: streaming.source: 'mqtt' is not one of kafka, files, socket"


def test_a_project_error_is_its_message_alone(monkeypatch: pytest.MonkeyPatch,
                                              env: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    import jobs.status

    def down(cfg: object) -> None:
        raise broker.BrokerError("Kafka exited during start-up")

    monkeypatch.setattr(jobs.status, "collect", down)
    assert _main(monkeypatch, env, "status") == 1
    assert capsys.readouterr().err.strip() == "Error: Kafka exited during start-up"
