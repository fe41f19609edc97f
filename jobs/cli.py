"""`lakehouse`: the command line of the project (console script in pyproject.toml)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import click

from jobs import broker
from jobs.config import Config, ConfigError, load_config
from jobs.logs import configure_logging

logger = logging.getLogger("lakehouse")

# Exceptions of these packages are expected failures: their message is the whole story.
_KNOWN_PACKAGES = frozenset({"jobs", "generator", "bronze", "silver", "gold", "dashboard",
                             "duckdb", "_duckdb", "kafka", "confluent_kafka"})
DEBUG_HINT = "run with --debug for the traceback"


class BadConfig(click.ClickException):
    """A bad setting: one line naming the key, exit 2 (like a usage error)."""

    exit_code = 2


def one_line(text: str) -> str:
    """A multi-line error (DuckDB's with its SQL excerpt and caret) as one line."""
    kept = []
    for line in str(text).splitlines():
        if line.startswith("LINE ") and ":" in line:  # DuckDB's excerpt of the SQL: skip it
            continue
        line = line.strip().lstrip("^").strip()  # DuckDB's caret under the error
        if line:
            kept.append(line)
    return " ".join(kept) or type(text).__name__


class OneLineErrors(click.Group):
    """The root group: a command's failure ends in one line on stderr and a non-zero exit.

    Bad configuration exits 2, an expected failure (the project's errors, DuckDB's, Kafka's)
    exits 1 with its message, anything else exits 1 with its type, message and the --debug
    hint; --debug lets it raise with the traceback.
    """

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except ConfigError as exc:
            if ctx.params.get("debug"):
                raise
            raise BadConfig(one_line(str(exc))) from exc
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            package = type(exc).__module__.split(".")[0]
            if package in _KNOWN_PACKAGES:
                raise click.ClickException(one_line(str(exc))) from exc
            raise click.ClickException(
                f"{type(exc).__name__}: {one_line(str(exc))} ({DEBUG_HINT})") from exc


def require_broker(cfg: Config, timeout_s: float = 3.0) -> None:
    """Fail at once, in one line, when nothing listens at kafka.bootstrap (no 30 s wait)."""
    for item in cfg.kafka.bootstrap.split(","):
        host, _, port = item.strip().rpartition(":")
        if broker.port_open(host.strip("[]"), int(port), timeout_s):
            return
    raise click.ClickException(
        f"no Kafka broker answers at {cfg.kafka.bootstrap}: start it with `lakehouse kafka "
        "start`, or point kafka.bootstrap (KAFKA_BOOTSTRAP) at a running one")


def _parse_sets(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
        out[key.strip()] = value.strip()
    return out


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Pipeline YAML (default conf/pipeline.yaml or $LAKEHOUSE_CONFIG).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set spark.shuffle_partitions=2 (repeatable).")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING… (default from config).")
@click.option("--debug", is_flag=True,
              help="On an unexpected failure, show the traceback instead of one line.")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, sets: tuple[str, ...],
        log_level: str | None, debug: bool) -> None:
    """IoT streaming lakehouse: Kafka -> Spark -> Delta bronze/silver/gold -> DuckDB."""
    overrides: dict[str, object] = dict(_parse_sets(sets))
    if "kafka.client.password" in overrides:
        raise click.BadParameter("a password on the command line is visible to every user of "
                                 "the machine: set KAFKA_SASL_PASSWORD or "
                                 "KAFKA_SASL_PASSWORD_FILE instead", param_hint="--set")
    sources = {key: "--set" for key in overrides}
    if log_level:
        overrides["log_level"] = log_level
        sources["log_level"] = "--log-level"
    try:
        cfg = load_config(config_path, overrides=overrides, sources=sources)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from exc
    try:
        configure_logging(cfg.log_level, cfg.paths.logs / "lakehouse.log")
    except OSError as exc:
        # An unwritable data folder: log to stderr only; `run` then refuses with the fix.
        configure_logging(cfg.log_level)
        if ctx.invoked_subcommand != "run":
            logger.warning("not writing the log file: %s: %s", exc.filename, exc.strerror)
    ctx.obj = cfg


@cli.group()
def kafka() -> None:
    """Run the local single-node Kafka broker (KRaft)."""


@kafka.command("start")
@click.option("--secure", is_flag=True,
              help="SASL_SSL with SCRAM-SHA-512 and a generated TLS certificate "
                   "(= kafka.broker.secure; KAFKA_SECURE=1).")
@click.pass_obj
def kafka_start(cfg: Config, secure: bool) -> None:
    """Start the broker and wait until it answers."""
    from jobs import kafka_client

    if secure:
        cfg = cfg.with_overrides({"kafka.broker.secure": True})
    try:
        st = broker.start(cfg)
        client = kafka_client.settings(cfg)
    except (broker.BrokerError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(st.describe())
    if cfg.kafka.broker.secure:
        folder = kafka_client.secure_dir(cfg).resolve()
        click.echo(f"secure: {client.describe()}; CA certificate {client.ssl_ca_file}")
        click.echo("  every lakehouse command: KAFKA_SECURE=1 (or --set kafka.broker.secure=true)"
                   + ("" if cfg.kafka.client.password or cfg.kafka.client.password_file else
                      f"; password in {folder / kafka_client.CLIENT_PASSWORD_FILE}"))


@kafka.command("stop")
@click.pass_obj
def kafka_stop(cfg: Config) -> None:
    """Stop the broker gracefully (SIGTERM, then wait)."""
    broker.stop(cfg)
    click.echo(broker.status(cfg).describe())


@kafka.command("status")
@click.pass_obj
def kafka_status(cfg: Config) -> None:
    """Say whether the broker runs and answers; exit 1 when it does not."""
    try:
        st = broker.status(cfg)
    except (broker.BrokerError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(st.describe())
    if not st.reachable:
        sys.exit(1)


@cli.group()
def topics() -> None:
    """Kafka topics of the pipeline."""


@topics.command("create")
@click.pass_obj
def topics_create(cfg: Config) -> None:
    """Create the input and alert topics (idempotent)."""
    from kafka.errors import KafkaError

    from jobs.topics import create_topics

    require_broker(cfg)
    try:
        counts = create_topics(cfg)
    except (broker.BrokerError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from exc
    except KafkaError as exc:
        raise click.ClickException(
            f"cannot create topics on {cfg.kafka.bootstrap}: {exc!r}. Is the broker up? "
            "(lakehouse kafka start)"
        ) from exc
    for name, n in counts.items():
        click.echo(f"{name}: {n} partitions")


@cli.command("run")
@click.option("--layers", default="bronze,silver,gold", show_default=True,
              help="Comma-separated subset of bronze,silver,gold.")
@click.option("--once", is_flag=True, help="Process everything available, then exit.")
@click.option("--console", is_flag=True, help="Also print each micro-batch to the terminal.")
@click.option("--wait-for-broker", "broker_wait_s", type=float, default=None, metavar="SECONDS",
              help="Start Spark while the broker and its topics come up, waiting this long "
                   "for them (scripts/start_all.sh starts both at once).")
@click.pass_obj
def run_cmd(cfg: Config, layers: str, once: bool, console: bool,
            broker_wait_s: float | None) -> None:
    """Run the streaming pipeline (Ctrl-C stops it cleanly)."""
    from jobs import preflight, runner
    from jobs.spark import SparkSetupError, build_spark

    try:
        chosen = runner.parse_layers(layers)
        # Folders, jars, broker, checkpoints: before Spark, so a bad setup is one clear line.
        cfg = preflight.check(cfg, chosen, broker_later=broker_wait_s is not None)
        spark = build_spark(cfg)
    except (ValueError, SparkSetupError, preflight.PreflightError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        if broker_wait_s is not None:
            cfg = preflight.await_broker(cfg, chosen, broker_wait_s)
        if once:
            rows = runner.run_once(spark, cfg, chosen)
            for name, n in rows.items():
                click.echo(f"{name}: {n} rows")
        else:
            runner.run_continuous(spark, cfg, chosen, console=console)
    except (runner.RunnerError, preflight.PreflightError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        spark.stop()


@cli.command("query")
@click.argument("sql")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.option("--version", type=int, default=None, help="Read the table(s) at this version.")
@click.option("--as-of", default=None, metavar="TS",
              help="Read the table(s) as of this ISO-8601 time (UTC unless it has a zone).")
@click.option("--table", "tables", multiple=True, metavar="VIEW",
              help="Views that --version/--as-of apply to (repeatable; default all).")
@click.pass_obj
def query_cmd(cfg: Config, sql: str, fmt: str, version: int | None, as_of: str | None,
              tables: tuple[str, ...]) -> None:
    """Run SQL in DuckDB over a view per Delta table (alerts, sensor_stats_5m, …)."""
    from jobs import serving

    try:
        lake = serving.open_lakehouse(cfg, version=version, as_of=as_of, tables=tables)
        result = lake.execute(sql)  # a failure names the missing views itself, in its one line
        if lake.missing:
            logger.info("no view for: %s", lake.describe_missing())
        click.echo(serving.FORMATS[fmt](result))
    except serving.ServingError as exc:
        raise click.ClickException(one_line(str(exc))) from exc


@cli.command("history")
@click.argument("table")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table",
              show_default=True)
@click.pass_obj
def history_cmd(cfg: Config, table: str, fmt: str) -> None:
    """Versions of a table: time, operation, rows added (from its _delta_log)."""
    from jobs import serving
    from jobs.tables import VIEWS

    if table not in VIEWS:
        raise click.ClickException(f"unknown table {table!r}; known: {', '.join(sorted(VIEWS))}")
    try:
        click.echo(serving.FORMATS[fmt](serving.history_result(cfg.paths.table(VIEWS[table]))))
    except serving.ServingError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but loopback needs a token.")
@click.option("--port", default=8501, show_default=True, type=int)
@click.option("--refresh", default=5.0, show_default=True, type=float,
              help="Seconds between page refreshes.")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="File holding the access token (else $LAKEHOUSE_DASHBOARD_TOKEN); with a "
                   "token every page but /healthz needs it.")
@click.option("--allow-host", multiple=True, metavar="NAME",
              help="Another Host header to accept, e.g. a DNS name (repeatable).")
@click.option("--request-timeout", default=10.0, show_default=True, type=float,
              help="Seconds a client has to send a whole request.")
@click.option("--max-connections", default=256, show_default=True, type=int,
              help="Open connections beyond which requests get 503.")
@click.pass_obj
def dashboard_cmd(cfg: Config, host: str, port: int, refresh: float, token_file: Path | None,
                  allow_host: tuple[str, ...], request_timeout: float,
                  max_connections: int) -> None:
    """Serve the live dashboard and /metrics (reads the tables through DuckDB)."""
    import os

    from dashboard.security import TOKEN_ENV, DashboardError, load_token
    from dashboard.server import ServerSettings, serve

    try:
        settings = ServerSettings(
            host=host, port=port, refresh_s=refresh,
            token=load_token(token_file, os.environ.get(TOKEN_ENV)),
            allow_hosts=allow_host, request_timeout_s=request_timeout,
            max_connections=max_connections)
        serve(cfg, settings)
    except DashboardError as exc:
        raise click.ClickException(str(exc)) from exc


@cli.command("bench-state")
@click.option("--sensors", default=1_000, show_default=True)
@click.option("--hours", default=6.0, show_default=True, help="Event time simulated.")
@click.option("--chunk-min", default=30.0, show_default=True,
              help="Event minutes written between two runs of the alerts query.")
@click.option("--interval", default=30.0, show_default=True,
              help="Event seconds between two readings of a sensor.")
@click.pass_obj
def bench_state_cmd(cfg: Config, sensors: int, hours: float, chunk_min: float,
                    interval: float) -> None:
    """Alert-state size over a long simulated run: rows and memory per chunk of event time."""
    from jobs.bench_state import alert_state_run

    points = alert_state_run(cfg, sensors=sensors, hours=hours, chunk_min=chunk_min,
                             interval_s=interval)
    click.echo(f"{'event time up to':<26} {'readings':>10} {'state rows':>11} "
               f"{'state MB':>9} {'batch ms':>9}")
    for p in points:
        mb = f"{p.state_memory_bytes / 1e6:.1f}" if p.state_memory_bytes is not None else "-"
        click.echo(f"{p.event_time_upto:<26} {p.readings:>10,} {p.state_rows or 0:>11,} "
                   f"{mb:>9} {p.batch_ms or 0:>9,}")


@cli.command("bench")
@click.option("--quick", is_flag=True, help="Smoke check: 30k backlog, 1k/s for 20 s (<5 min).")
@click.option("--messages", type=int, default=None, help="Backlog size (default 1,000,000).")
@click.option("--sensors", type=int, default=None, help="Fleet size (default 10,000).")
@click.option("--rates", default=None,
              help="Steady rates, e.g. 1000,5000,20000 ('none': no latency runs).")
@click.option("--duration", "rate_duration_s", type=float, default=None,
              help="Seconds of producing at each rate (default 120; --quick 20).")
@click.option("--sustainable-from", "sustain_from", type=float, default=None,
              help="Also search the sustainable rate (lag bounded over a window), starting at "
                   "this rate: double while it holds, halve while it grows, then bisect.")
@click.option("--sustain-steps", type=int, default=None, help="Trials at most (default 4).")
@click.option("--sustain-window", "sustain_window_s", type=float, default=None,
              help="Seconds over which the lag must stay bounded (default 300).")
@click.option("--sustain-warmup", "sustain_warmup_s", type=float, default=None,
              help="Seconds of producing before the window (default 120).")
@click.option("--sustain-path", type=click.Choice(["all", "alert"]), default=None,
              help="Whose lag must stay bounded: every query reading the readings (default), or "
                   "the alert path (bronze, silver, alerts).")
@click.option("--no-throughput", "throughput", flag_value=False, default=None,
              help="Skip the backlog, the ceiling and the per-layer throughput.")
@click.option("--no-reference", "reference", flag_value=False, default=None,
              help="Skip the plain reference query run after each latency run.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Bench folder (default <data_dir>/bench/run-<UTC time>).")
@click.option("--keep-data", is_flag=True, default=None,
              help="Keep the bench's broker storage and tables.")
@click.pass_obj
def bench_cmd(cfg: Config, quick: bool, out: Path | None, rates: str | None,
              **kwargs: object) -> None:
    """Throughput, latency and cost against this machine's Kafka/Spark ceiling (own broker).

    Only the sustainable-rate search: --no-throughput --rates none --sustainable-from 1000.
    """
    from jobs.bench import plan, run_bench, summary_lines

    if rates:
        kwargs["rates"] = () if rates.strip().lower() == "none" else tuple(
            float(x) for x in rates.split(",") if x.strip())
    p = plan(cfg, quick=quick, out=out, **kwargs)
    click.echo(f"bench folder: {p.root}")
    result = run_bench(cfg, p.opts, p.root)
    for line in summary_lines(result):
        click.echo(line)
    click.echo(f"report: {p.root / 'report.md'}")


@cli.command("generate")
@click.option("--sensors", default=100, show_default=True, type=int, help="Fleet size.")
@click.option("--rate", type=float, default=None,
              help="Messages per second overall (default: real time, or --speedup).")
@click.option("--duration", type=float, default=None, help="Run this many wall seconds.")
@click.option("--count", type=int, default=None, help="Send this many messages.")
@click.option("--seed", default=42, show_default=True, type=int)
@click.option("--interval", default=5.0, show_default=True, type=float,
              help="Event-time seconds between two readings of a sensor.")
@click.option("--faults", default=None, metavar="KIND=RATE,...",
              help="Per-reading fault rates, e.g. malformed_json=0.01,duplicate=0.02 (all=R).")
@click.option("--events", default=None, metavar="KIND=RATE,...",
              help="Per-reading event rates, e.g. heat_spike=0.0005,silence=0.0002 (all=R).")
@click.option("--sink", type=click.Choice(["kafka", "files", "socket"]), default="kafka",
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder of the files sink.")
@click.option("--port", default=9999, show_default=True, type=int, help="Socket sink port.")
@click.option("--truth", type=click.Path(path_type=Path), default=None,
              help="Write injected events and faults here (JSON lines).")
@click.option("--registry", type=click.Path(path_type=Path), default=None,
              help="Sensor registry CSV (default <data_dir>/registry/sensors.csv).")
@click.option("--speedup", type=float, default=None,
              help="Event time runs this many times faster than the wall clock.")
@click.option("--start", default=None, metavar="ISO|now",
              help="Event time of the first reading (default: so the stream ends now; 'now' "
                   "with real time: event time is the wall clock).")
@click.option("--first-event-after", "first_event_after_s", type=float, default=None,
              metavar="SECONDS", help="Event time before the first injected event may start "
                                      "(default 31 min: the trailing window and a margin).")
@click.option("--workers", default=1, show_default=True, type=int,
              help="Producer processes, each with a share of the fleet.")
@click.option("--producer", type=click.Choice(["kafka-python", "confluent"]),
              default="kafka-python", show_default=True,
              help="Kafka client: confluent (librdkafka) sends ~10x faster.")
@click.pass_obj
def generate_cmd(cfg: Config, **kwargs: object) -> None:
    """Simulate a sensor fleet (with injected events and faults) into Kafka, files or a socket."""
    from generator.commands import GenerateOptions, generate, rates_text

    kwargs["duration_s"] = kwargs.pop("duration")
    kwargs["interval_s"] = kwargs.pop("interval")
    if kwargs["sink"] == "kafka":
        require_broker(cfg)
    try:
        result = generate(cfg, GenerateOptions(**kwargs))  # type: ignore[arg-type]
    except (ValueError, OSError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(result.describe())
    click.echo(f"faults: {rates_text(result.faults)}")
    click.echo(f"events: {rates_text(result.events)}")


@cli.command("replay")
@click.argument("source")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Folder holding beijing-prsa/ (default ../shared/data from the repo root).")
@click.option("--speedup", default=3600.0, show_default=True, type=float,
              help="Event time runs this many times faster than the wall clock.")
@click.option("--rate", type=float, default=None, help="Messages per second instead.")
@click.option("--mapping", default=None, metavar="COL=FIELD,...",
              help="CSV column -> wire field (sensor_id, timestamp, temperature, humidity, "
                   "pressure, location, dewpoint).")
@click.option("--stations", default=None, help="Beijing stations, comma-separated.")
@click.option("--limit", type=int, default=None, help="Send at most this many readings.")
@click.option("--sink", type=click.Choice(["kafka", "files", "socket"]), default="kafka",
              show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None)
@click.option("--port", default=9999, show_default=True, type=int)
@click.option("--producer", type=click.Choice(["kafka-python", "confluent"]),
              default="kafka-python", show_default=True)
@click.pass_obj
def replay_cmd(cfg: Config, source: str, data_dir: Path | None, stations: str | None,
               **kwargs: object) -> None:
    """Stream real data (``beijing`` or a CSV file) preserving event time."""
    from generator.commands import DEFAULT_SHARED_DATA, ReplayOptions, replay
    from generator.replay import ATTRIBUTION

    click.echo(ATTRIBUTION)
    names = tuple(s.strip() for s in (stations or "").split(",") if s.strip())
    opts = ReplayOptions(source=source, data_dir=data_dir or DEFAULT_SHARED_DATA,
                         stations=names, **kwargs)  # type: ignore[arg-type]
    if kwargs["sink"] == "kafka":
        require_broker(cfg)
    try:
        result, stats = replay(cfg, opts)
    except (ValueError, OSError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(stats.describe())
    click.echo(result.describe())


@cli.group()
def alerts() -> None:
    """The alert engine: live tail of iot-alerts, scoring against a truth file or labels."""


@alerts.command("tail")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest alert on the topic.")
@click.option("--max", "limit", type=int, default=None, help="Stop after this many alerts.")
@click.option("--idle", type=float, default=None, help="Stop after this many quiet seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print each alert's JSON as published.")
@click.pass_obj
def alerts_tail(cfg: Config, from_beginning: bool, limit: int | None, idle: float | None,
                as_json: bool) -> None:
    """Print alerts from the alert topic as they are published."""
    import json

    from jobs.alerts_job import format_alert, tail_alerts

    require_broker(cfg)
    for alert in tail_alerts(cfg, from_beginning=from_beginning, limit=limit, idle_s=idle):
        click.echo(json.dumps(alert, sort_keys=True) if as_json else format_alert(alert))


@alerts.command("score")
@click.option("--truth", required=True, type=click.Path(exists=True, path_type=Path),
              help="Generator truth file (JSON lines).")
@click.option("--table", type=click.Path(path_type=Path), default=None,
              help="gold/alerts Delta table (default: the configured one).")
@click.option("--strict", is_flag=True,
              help="Exit 1 unless every event is detected and no alert is unexplained.")
@click.pass_obj
def alerts_score(cfg: Config, truth: Path, table: Path | None, strict: bool) -> None:
    """Recall per injected event kind and unexplained alerts of gold/alerts."""
    from jobs import tables
    from jobs.alert_score import load_alerts, read_truth, score

    path = table or cfg.paths.table(tables.ALERTS)
    if not (path / "_delta_log").is_dir():
        raise click.ClickException(f"no Delta table at {path} (no _delta_log): gold/alerts is "
                                   "written by `lakehouse run`; or give --table")
    result = score(load_alerts(path), read_truth(truth), cfg=cfg.alerts)
    click.echo(result.describe())
    if strict and not result.perfect:
        sys.exit(1)


@alerts.command("evaluate")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(exists=True, path_type=Path))
@click.option("--windows", "windows_file", type=click.Path(exists=True, path_type=Path),
              default=None, help="NAB windows JSON (default: <folder>/labels/windows.json).")
@click.option("--metric", type=click.Choice(["temperature", "humidity", "pressure"]),
              default="temperature", show_default=True,
              help="The reading metric a NAB series' value (or a CSV's value column) becomes.")
@click.option("--scale", type=click.Choice(["none", "fit"]), default="none", show_default=True,
              help="fit: map each series' min..max onto the values of its metric that no "
                   "static threshold fires on (for series in other units).")
@click.option("--label-column", default="label", show_default=True,
              help="Column of per-reading labels in a CSV.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the Monte Carlo chance baseline (series with many events).")
@click.option("--draws", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Monte Carlo draws of the chance baseline.")
@click.option("--detector", "detector", default="rules", show_default=True,
              help="What raises alerts: rules (the configured ones), anomaly[:METHOD] (the "
                   "adaptive detector, type ANOMALY; methods seasonal (default), ewma, hst = "
                   "River's HalfSpaceTrees for comparison) or both, e.g. rules,anomaly:ewma.")
@click.option("--by-type", is_flag=True, help="Also a table of each series by alert type.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON instead.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Write one PNG per series into this folder.")
@click.pass_obj
def alerts_evaluate(cfg: Config, paths: tuple[Path, ...], windows_file: Path | None,
                    metric: str, scale: str, label_column: str, seed: int, draws: int,
                    detector: str, by_type: bool, as_json: bool, plots_dir: Path | None
                    ) -> None:
    """Score the alert rules (the configured ones) on labelled series.

    PATHS: NAB folders (CSV `timestamp,value` per series, labels/windows.json), NAB CSVs
    (with --windows), or CSVs with a label column per reading. Per series and overall: events
    hit, false alerts per sensor-day and -hour, share of alerts inside events, and how many
    events as many random alerts would hit (p-value), by alert group and type.
    """
    import json

    from jobs.alert_evaluate import Detectors, SeriesResult, describe, evaluate
    from jobs.alert_evaluate_io import LabelledDataError, load, write_plots

    try:
        detectors = Detectors.parse(detector)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--detector") from exc
    try:
        series = load(list(paths), metric=metric, windows_file=windows_file,
                      label_column=label_column)
    except LabelledDataError as exc:
        raise click.ClickException(str(exc)) from exc
    logger.info("evaluating %d series (%s readings) with scale=%s, detectors %s", len(series),
                f"{sum(len(s.times_ms) for s in series):,}", scale, detectors)

    def progress(r: SeriesResult) -> None:
        s = r.groups["all"]
        logger.info("%s: %d readings, %d quarantined, %d alerts, %d/%d events hit",
                    r.series.name, len(r.prepared.readings), len(r.prepared.quarantined),
                    s.alerts, s.hit, s.events)

    ev = evaluate(series, cfg, scale=scale, seed=seed, draws=draws, detectors=detectors,
                  on_series=progress)
    if plots_dir is not None:
        write_plots(ev, plots_dir)
    click.echo(json.dumps(ev.as_dict(), indent=2) if as_json else describe(ev, by_type=by_type))


@cli.command("status")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.pass_obj
def status_cmd(cfg: Config, fmt: str) -> None:
    """Broker, input-topic lag per partition, each query's last batch, table versions/rows."""
    from jobs.status import collect

    st = collect(cfg)
    click.echo(st.to_json() if fmt == "json" else st.describe())


@cli.command("maintain")
@click.option("--table", "tables", multiple=True, metavar="VIEW",
              help="Only these tables (view names, repeatable; default all).")
@click.pass_obj
def maintain_cmd(cfg: Config, tables: tuple[str, ...]) -> None:
    """OPTIMIZE (compact small files) and VACUUM (maintenance.retention_hours) every table."""
    from jobs.maintain import MaintenanceError, maintain
    from jobs.spark import SparkSetupError, build_spark

    try:
        spark = build_spark(cfg)
    except SparkSetupError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        reports = maintain(spark, cfg, tables)
    except MaintenanceError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        spark.stop()
    click.echo(f"retention {cfg.maintenance.retention_hours:g} h; "
               "files = data files of the current version / on disk")
    for r in reports:
        click.echo(r.describe())
    if any(r.error for r in reports):
        sys.exit(1)


@cli.group()
def chaos() -> None:
    """Reliability harness: try hard to break exactly-once."""


@chaos.command("crash-loop")
@click.option("--messages", default=300_000, show_default=True)
@click.option("--sensors", default=1_000, show_default=True)
@click.option("--kills", default=5, show_default=True, help="SIGKILLs of the running pipeline.")
@click.option("--seed", default=1, show_default=True)
@click.option("--min-s", default=20.0, show_default=True, help="Shortest run before a kill.")
@click.option("--max-s", default=60.0, show_default=True, help="Longest run before a kill.")
@click.option("--folder", type=click.Path(path_type=Path), default=None,
              help="Private data folder (default: a new temporary one).")
@click.pass_obj
def chaos_crash_loop(cfg: Config, messages: int, sensors: int, kills: int, seed: int,
                     min_s: float, max_s: float, folder: Path | None) -> None:
    """Produce, SIGKILL the pipeline at random moments, restart, verify every invariant.

    Runs on a private broker and data folder; the user's data and broker are not touched.
    """
    from jobs.chaos import run_chaos

    _on_scratch_broker(cfg, folder, lambda scratch: run_chaos(
        scratch, messages=messages, sensors=sensors, kills=kills, seed=seed, min_s=min_s,
        max_s=max_s))


@chaos.command("broker-loss")
@click.option("--messages", default=60_000, show_default=True)
@click.option("--sensors", default=200, show_default=True)
@click.option("--rate", default=500.0, show_default=True, help="Generator messages per second.")
@click.option("--lead-s", default=30.0, show_default=True, help="Run this long, then stop Kafka.")
@click.option("--outage-s", default=60.0, show_default=True, help="How long Kafka stays down.")
@click.option("--hard", is_flag=True, help="SIGKILL the broker instead of a clean stop.")
@click.option("--seed", default=1, show_default=True)
@click.option("--folder", type=click.Path(path_type=Path), default=None,
              help="Private data folder (default: a new temporary one).")
@click.pass_obj
def chaos_broker_loss(cfg: Config, messages: int, sensors: int, rate: float, lead_s: float,
                      outage_s: float, hard: bool, seed: int, folder: Path | None) -> None:
    """Take Kafka away mid-stream while the generator and pipeline run, then verify.

    Runs on a private broker and data folder; the user's data and broker are not touched.
    """
    from jobs.chaos import run_broker_loss

    _on_scratch_broker(cfg, folder, lambda scratch: run_broker_loss(
        scratch, messages=messages, sensors=sensors, seed=seed, rate=rate, lead_s=lead_s,
        outage_s=outage_s, hard=hard))


def _on_scratch_broker(cfg: Config, folder: Path | None, run: Callable) -> None:
    """Run a harness on a private broker and folder, print its report, exit 1 on failure."""
    import tempfile

    from jobs.chaos import scratch_config

    folder = folder or Path(tempfile.mkdtemp(prefix="lakehouse-chaos-"))
    scratch = scratch_config(cfg, folder, broker.free_port_pair())
    broker.start(scratch)
    try:
        report = run(scratch)
    finally:
        broker.stop(scratch)
    click.echo(report.describe())
    click.echo(f"data kept in {folder}")
    if not report.ok:
        sys.exit(1)


def main() -> None:
    """The console script: a usage error is one line too (exit 2), not click's usage block."""
    try:
        code = cli.main(prog_name="lakehouse", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # a bare group: its help, as click does
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
        click.echo(f"Error: {one_line(exc.format_message())}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Error: aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
