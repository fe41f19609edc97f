"""The one typed, frozen configuration object.

Loaded from ``conf/pipeline.yaml``, then overridden by environment variables, then by explicit
overrides (CLI flags, tests). This is the only module that reads the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "conf" / "pipeline.yaml"


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the key."""


_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604_800}


def interval_seconds(interval: str) -> int:
    """Seconds of a Spark interval string such as "10 minutes" or "1 hour 30 minutes"."""
    parts = interval.split()
    if not parts or len(parts) % 2:
        raise ConfigError(f"cannot read interval {interval!r} (say e.g. '10 minutes')")
    total = 0
    for count, unit in zip(parts[::2], parts[1::2], strict=True):
        name = unit.lower().rstrip("s")
        if name not in _UNITS or not count.isdigit():
            raise ConfigError(f"cannot read interval {interval!r} (say e.g. '10 minutes')")
        total += int(count) * _UNITS[name]
    return total


@dataclass(frozen=True)
class PathsConfig:
    data_dir: Path = Path("data")
    lakehouse_root: Path | None = None
    checkpoint_root: Path | None = None
    deps_dir: Path = REPO_ROOT / ".deps"

    @property
    def lakehouse(self) -> Path:
        return self.lakehouse_root or self.data_dir / "lakehouse"

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_root or self.lakehouse / "_checkpoints"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def run(self) -> Path:
        """Pid files of the services the project starts."""
        return self.data_dir / "run"

    @property
    def kafka_storage(self) -> Path:
        return self.data_dir / "kafka"

    def table(self, name: str) -> Path:
        """Absolute path of a Delta table by its layer/name, e.g. ``bronze/sensor_raw``."""
        return (self.lakehouse / name).resolve()

    def checkpoint(self, query: str) -> Path:
        """Absolute path of a streaming query's checkpoint."""
        return (self.checkpoints / query).resolve()


@dataclass(frozen=True)
class BrokerConfig:
    controller_port: int | None = None
    heap: str = "512m"
    # Two cores shared with Spark: C1 only and the serial collector halve the broker's CPU in
    # the first two minutes (28-33 -> 16-19 CPU s); it still serves far more than Spark reads.
    jvm_options: tuple[str, ...] = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
    start_timeout_s: float = 60.0
    stop_timeout_s: float = 30.0


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str = "127.0.0.1:9092"
    topic_in: str = "iot-sensors"
    topic_alerts: str = "iot-alerts"
    partitions_in: int = 6
    partitions_alerts: int = 3
    broker: BrokerConfig = field(default_factory=BrokerConfig)

    @property
    def host(self) -> str:
        return self.bootstrap.split(",")[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def controller_port(self) -> int:
        return self.broker.controller_port or self.port + 1


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[8]"
    app_name: str = "iot-lakehouse"
    shuffle_partitions: int = 2
    driver_memory: str = "2g"
    ui_enabled: bool = True
    # The driver's RPC, block manager and UI listen here (the UI by SPARK_LOCAL_IP): loopback
    # unless set otherwise, explicitly.
    bind_address: str = "127.0.0.1"
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            ipaddress.ip_address(self.bind_address)
        except ValueError as exc:
            raise ConfigError(f"spark.bind_address: {self.bind_address!r} is not an IP "
                              "address (say e.g. 127.0.0.1)") from exc


@dataclass(frozen=True)
class StreamingConfig:
    trigger_interval: str = "5 seconds"
    max_offsets_per_trigger: int = 200_000
    watermark: str = "10 minutes"
    starting_offsets: str = "earliest"
    source: str = "kafka"                 # kafka | files | socket
    files_dir: Path | None = None         # default: <data_dir>/incoming
    socket_host: str = "127.0.0.1"
    socket_port: int = 9999
    max_files_per_trigger: int = 1000     # Delta-to-Delta streams (silver, gold)
    max_restarts: int = 5                 # failed query restarts before the runner gives up
    restart_backoff_s: float = 2.0        # first back-off, doubled each restart (max 60 s)
    healthy_reset_s: float = 300.0        # this long without a failure resets the restart count
    deferred_start_s: float = 300.0       # gold aggregates start at most this long after the rest
    metrics_flush_s: float = 5.0          # gold/pipeline_metrics: one append per flush
    # Micro-batch interval per query (name -> interval); trigger_interval for the others.
    triggers: Mapping[str, str] = field(default_factory=dict)
    # Static thresholds in Spark's Real-Time Mode (a Kafka source only). The batch is the
    # query's checkpoint interval, not a latency.
    realtime_alerts: bool = True
    realtime_batch: str = "5 minutes"

    def trigger_for(self, query: str) -> str:
        return self.triggers.get(query, self.trigger_interval)

    @property
    def watermark_s(self) -> int:
        return interval_seconds(self.watermark)


@dataclass(frozen=True)
class ValidationConfig:
    """Silver's rules; ranges are inclusive [low, high]."""

    temperature: tuple[float, float] = (-50.0, 50.0)
    humidity: tuple[float, float] = (0.0, 100.0)
    pressure: tuple[float, float] = (870.0, 1085.0)
    max_future: str = "1 day"
    min_event_time: str = "1900-01-01T00:00:00Z"
    dedup_watermark: str = "10 minutes"

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {"temperature": self.temperature, "humidity": self.humidity,
                "pressure": self.pressure}


@dataclass(frozen=True)
class HighThreshold:
    threshold: float
    critical_above: float


@dataclass(frozen=True)
class LowThreshold:
    threshold: float
    critical_below: float


@dataclass(frozen=True)
class RapidChange:
    delta: float = 5.0
    within_s: int = 60


@dataclass(frozen=True)
class Trailing:
    window_s: int = 1800
    min_readings: int = 10
    # production: with fewer than min_readings in window_s, the last min_readings readings
    # when they span at most this long (slow sensors are covered by count, not by time).
    max_span_s: int = 86_400


@dataclass(frozen=True)
class DynamicThreshold:
    k_std: float = 2.0


@dataclass(frozen=True)
class ZScore:
    threshold: float = 3.0
    metrics: tuple[str, ...] = ("temperature", "humidity", "pressure")


@dataclass(frozen=True)
class Consecutive:
    count: int = 3


@dataclass(frozen=True)
class RisingTrend:
    minutes: int = 15


@dataclass(frozen=True)
class Offline:
    after_s: int = 600
    # production: offline after max(after_s, interval_factor x the interval_quantile of the
    # sensor's last `gaps` reporting intervals); before it has one, after initial_after_s.
    interval_factor: float = 3.0
    interval_quantile: float = 0.9
    gaps: int = 32
    initial_after_s: int = 7_200


@dataclass(frozen=True)
class AnomalyRule:
    """The adaptive detector (`gold.anomaly`, alert type ANOMALY) as the production profile
    runs it: one per (sensor, metric); the rest of its settings are `AnomalySettings`'."""

    method: str = "seasonal"
    metrics: tuple[str, ...] = ("temperature", "humidity", "pressure")
    enter: float = 6.0
    exit: float = 3.0
    cooldown_s: int = 10_800
    warmup_s: int = 7_200


# Alert profiles: `seed` is every rule exactly as DESIGN.md defines it; `production` keeps the
# static thresholds, RAPID_CHANGE, CONSECUTIVE_ALERTS and offline detection (relative to each
# sensor's reporting interval) and replaces the trailing mean/std rules and RISING_TREND by the
# adaptive detector (ANOMALY).
PROFILES: tuple[str, ...] = ("production", "seed")
PROFILE_RULES: Mapping[str, tuple[str, ...]] = {
    "seed": ("HIGH_TEMP", "LOW_TEMP", "HIGH_HUMIDITY", "RAPID_CHANGE", "DYNAMIC_THRESHOLD",
             "ZSCORE_OUTLIER", "CONSECUTIVE_ALERTS", "RISING_TREND", "SENSOR_OFFLINE",
             "SENSOR_RECOVERED"),
    "production": ("HIGH_TEMP", "LOW_TEMP", "HIGH_HUMIDITY", "RAPID_CHANGE", "ANOMALY",
                   "CONSECUTIVE_ALERTS", "SENSOR_OFFLINE", "SENSOR_RECOVERED"),
}
RULE_TYPES: tuple[str, ...] = (*PROFILE_RULES["seed"], "ANOMALY")
ANOMALY_METHODS: tuple[str, ...] = ("seasonal", "ewma")  # gold.anomaly.METHODS


@dataclass(frozen=True)
class AlertsConfig:
    """Thresholds, windows and severities of every alert rule (DESIGN.md "Alerts")."""

    high_temp: HighThreshold = field(default_factory=lambda: HighThreshold(30.0, 40.0))
    low_temp: LowThreshold = field(default_factory=lambda: LowThreshold(10.0, 0.0))
    high_humidity: HighThreshold = field(default_factory=lambda: HighThreshold(80.0, 90.0))
    rapid_change: RapidChange = field(default_factory=RapidChange)
    trailing: Trailing = field(default_factory=Trailing)
    dynamic_threshold: DynamicThreshold = field(default_factory=DynamicThreshold)
    zscore: ZScore = field(default_factory=ZScore)
    consecutive: Consecutive = field(default_factory=Consecutive)
    rising_trend: RisingTrend = field(default_factory=RisingTrend)
    offline: Offline = field(default_factory=Offline)
    anomaly: AnomalyRule = field(default_factory=AnomalyRule)
    # seed | production (PROFILE_RULES); `rules` non-empty: exactly these alert types instead
    # of the profile's, with the profile's semantics (cadence-aware in production).
    profile: str = "production"
    rules: tuple[str, ...] = ()
    # production: after an episode of a once-per-episode rule resolves, no new alert of the
    # same (type, metric) for this long (gold.alert_rules.COOLDOWN_TYPES).
    cooldown_s: int = 900
    severities: Mapping[str, str] = field(default_factory=dict)
    # A sensor's rule state is deleted this long (event time) after its last reading.
    state_ttl_s: int = 7 * 24 * 3600
    # Sensors are hashed into this many grouping keys of the alerts query: one Python call and
    # one timer per key and batch instead of one per sensor. Frozen into the checkpoint.
    key_buckets: int = 64

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(f"alerts.profile must be one of {', '.join(PROFILES)}, got "
                              f"{self.profile!r}")
        unknown = sorted(set(self.rules) - set(RULE_TYPES))
        if unknown:
            raise ConfigError(f"alerts.rules: unknown alert type(s) {unknown}; known: "
                              f"{', '.join(RULE_TYPES)}")
        a, off = self.anomaly, self.offline
        if a.method not in ANOMALY_METHODS:
            raise ConfigError(f"alerts.anomaly.method must be one of "
                              f"{', '.join(ANOMALY_METHODS)}, got {a.method!r}")
        bad = sorted(set(a.metrics) - {"temperature", "humidity", "pressure"})
        if bad or not 0 < a.exit <= a.enter:
            raise ConfigError(f"alerts.anomaly: metrics must be temperature, humidity or "
                              f"pressure and 0 < exit <= enter (got metrics {list(a.metrics)},"
                              f" enter {a.enter}, exit {a.exit})")
        if not 0 < off.interval_quantile <= 1 or off.interval_factor <= 0 or off.gaps < 1:
            raise ConfigError("alerts.offline: need 0 < interval_quantile <= 1, "
                              "interval_factor > 0 and gaps >= 1")
        # not a field: derived, so with_overrides and asdict never see it
        object.__setattr__(self, "_enabled",
                           frozenset(self.rules or PROFILE_RULES[self.profile]))

    @property
    def enabled(self) -> frozenset[str]:
        """The alert types the rules raise (the profile's, or `rules`)."""
        return self._enabled  # type: ignore[attr-defined,no-any-return]

    @property
    def adaptive(self) -> bool:
        """Cadence-aware semantics (every profile but `seed`)."""
        return self.profile != "seed"


@dataclass(frozen=True)
class GoldConfig:
    """Windows and measures of the gold aggregates (DESIGN.md "Tables")."""

    tumbling: str = "5 minutes"
    sliding: str = "10 minutes"
    slide: str = "5 minutes"
    percentile_accuracy: int = 10_000     # rank error <= readings / accuracy
    open_alert_window_s: int = 900        # sensor_status.open_alerts looks back this far
    alert_counts_source: str = "alerts"   # alerts (gold/alerts) | silver (static is_alert)


@dataclass(frozen=True)
class MaintenanceConfig:
    """`lakehouse maintain`: OPTIMIZE every table, then VACUUM files older than the retention.

    The retention bounds time travel (versions older than it may lose their files) and must
    outlive any running stream's oldest unread snapshot; Delta refuses less than 168 h unless
    its safety check is disabled, which this project never does.
    """

    retention_hours: float = 168.0
    optimize: bool = True
    vacuum: bool = True


@dataclass(frozen=True)
class Config:
    paths: PathsConfig = field(default_factory=PathsConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    gold: GoldConfig = field(default_factory=GoldConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    log_level: str = "INFO"

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with dotted keys replaced, e.g. ``{"spark.shuffle_partitions": 2}``."""
        return _build(Config, _merge(dataclasses.asdict(self), _nest(overrides)), "")


# Environment variable -> dotted config key. Documented in conf/pipeline.yaml and README.
ENV_OVERRIDES: dict[str, str] = {
    "LAKEHOUSE_DATA": "paths.data_dir",
    "LAKEHOUSE_ROOT": "paths.lakehouse_root",
    "LAKEHOUSE_CHECKPOINTS": "paths.checkpoint_root",
    "LAKEHOUSE_DEPS": "paths.deps_dir",
    "KAFKA_BOOTSTRAP": "kafka.bootstrap",
    "LAKEHOUSE_TOPIC_IN": "kafka.topic_in",
    "LAKEHOUSE_TOPIC_ALERTS": "kafka.topic_alerts",
    "SPARK_MASTER": "spark.master",
    "SPARK_SHUFFLE_PARTITIONS": "spark.shuffle_partitions",
    "SPARK_DRIVER_MEMORY": "spark.driver_memory",
    "LAKEHOUSE_LOG_LEVEL": "log_level",
}


def load_config(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read the YAML file, apply environment and explicit overrides, validate types."""
    env = os.environ if env is None else env
    path = Path(path or env.get("LAKEHOUSE_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    from_env = {key: env[var] for var, key in ENV_OVERRIDES.items() if env.get(var)}
    merged = _merge(_merge(raw, _nest(from_env)), _nest(overrides or {}))
    return _build(Config, merged, "")


T = TypeVar("T")


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - fields
    if unknown:
        raise ConfigError(f"unknown config key(s) {sorted(unknown)} in {where or 'top level'}")
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value or {}, key)
    optional = hint in (Path | None, int | None, float | None, str | None)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} must not be empty")
    base = {Path | None: Path, int | None: int, float | None: float, str | None: str}.get(
        hint, hint
    )
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                return value.lower() in {"true", "1", "yes"}
            return bool(value)
        if base in (int, float, str, Path):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return base(value)
        if getattr(base, "__origin__", None) is tuple:
            args = base.__args__
            items = list(value)
            if args[-1] is Ellipsis:
                return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(items))
            if len(items) != len(args):
                raise ValueError(value)
            pairs = enumerate(zip(args, items, strict=True))
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in pairs)
        if getattr(base, "__origin__", None) is Mapping or base is Mapping[str, str]:
            return {str(k): str(v) for k, v in dict(value).items()}
    except (TypeError, ValueError) as exc:
        kind = getattr(base, "__name__", base)
        raise ConfigError(f"{key}: cannot use {value!r} as {kind}") from exc
    return value
