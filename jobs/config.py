"""The one typed, frozen configuration object.

Loaded from ``conf/pipeline.yaml``, then overridden by environment variables, then by explicit
overrides (CLI flags, tests). This is the only module that reads the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "conf" / "pipeline.yaml"


class ConfigError(ValueError):
    """The configuration file or an override is invalid; the message names the key."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key  # the dotted key (or section) at fault, when known


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


# --- constraints checked at load ---------------------------------------------------------
# A field states what it accepts in its metadata, e.g. ``field(default=6, metadata={"ge": 1})``;
# `_check` verifies it right after the value is coerced, so a bad value is refused with its key:
#   ge / gt / le / lt     numeric bounds (a tuple: each item; None always passes)
#   choices               allowed values (a tuple: each item; a mapping: each value)
#   keys                  allowed keys of a mapping
#   form                  a named format of `_FORMS` (a tuple or mapping: each item/value)
#   key_form              a named format of `_FORMS` for each key of a mapping
#   why                   the reason, shown after a failed bound
# Checks that relate several fields of one section live in the section's `_consistency`.

PORTS = (1, 65535)
LOG_LEVELS: tuple[str, ...] = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
# streaming.triggers keys: the purposes of the queries (jobs.runner.TRIGGER_KEYS' values).
TRIGGER_QUERIES: tuple[str, ...] = ("bronze", "silver", "alerts_realtime", "alerts",
                                    "gold_aggregates", "gold_dependents")
STREAM_SOURCES: tuple[str, ...] = ("kafka", "files", "socket")
ALERT_COUNT_SOURCES: tuple[str, ...] = ("alerts", "silver")
SEVERITY_LEVELS: tuple[str, ...] = ("INFO", "WARNING", "CRITICAL")  # gold.schema.SEVERITIES
METRIC_NAMES: tuple[str, ...] = ("temperature", "humidity", "pressure")
# Delta's VACUUM safety check (which stays on) refuses a shorter retention.
MIN_RETENTION_HOURS = 168.0

_HOST = re.compile(r"(?i)^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
                   r"(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*\.?$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_JVM_SIZE = re.compile(r"(?i)^[1-9][0-9]*[kmgt]?$")
_SPARK_SIZE = re.compile(r"(?i)^[1-9][0-9]*([kmgtp]b?)?$")
_SPARK_MASTER = re.compile(
    r"^(local(\[([1-9][0-9]*|\*)(,[0-9]+)?\])?"
    r"|local-cluster\[[1-9][0-9]*,[1-9][0-9]*,[1-9][0-9]*\]"
    r"|(spark|mesos|k8s)://\S+|yarn)$")


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOST.match(host))


def _host_port_list(value: str) -> str | None:
    for item in value.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not _is_host(host) or not port.isdigit() \
                or not PORTS[0] <= int(port) <= PORTS[1]:
            return "is not host:port (e.g. 127.0.0.1:9092; several: comma-separated)"
    return None


def _interval(value: str, *, positive: bool) -> str | None:
    try:
        seconds = interval_seconds(value)
    except ConfigError:
        return "is not an interval (e.g. '10 minutes'; units second, minute, hour, day, week)"
    if positive and seconds <= 0:
        return "must be a positive interval (e.g. '10 minutes')"
    return None


def _trigger(value: str) -> str | None:
    """A processing-time trigger: Spark also takes milliseconds there."""
    parts = value.split()
    ok = bool(parts) and not len(parts) % 2 and all(
        n.isdigit() and u.lower().rstrip("s") in {*_UNITS, "millisecond"}
        for n, u in zip(parts[::2], parts[1::2], strict=True))
    return None if ok else ("is not an interval (e.g. '5 seconds' or '500 milliseconds')")


def _offsets(value: str) -> str | None:
    if value in ("earliest", "latest"):
        return None
    try:
        if isinstance(json.loads(value), dict):
            return None
    except ValueError:
        pass
    return "is not earliest, latest or a JSON object of offsets per topic and partition"


def _utc_time(value: str) -> str | None:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return "is not an ISO-8601 time (e.g. 1900-01-01T00:00:00Z)"
    return None if moment.tzinfo else "needs a time zone (e.g. 1900-01-01T00:00:00Z)"


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _folder(value: Path) -> str | None:
    return "is a file, not a folder" if value.is_file() else None


_FORMS: dict[str, Any] = {
    "host_port": _host_port_list,
    "host": lambda v: None if _is_host(v) else "is not a host name or IP address",
    "ip": lambda v: None if _is_ip(v) else "is not an IP address (e.g. 127.0.0.1)",
    "topic": lambda v: None if _TOPIC.match(v) else
    "is not a Kafka topic name (1-249 of letters, digits, '.', '_', '-')",
    "window": lambda v: _interval(v, positive=True),
    "delay": lambda v: _interval(v, positive=False),
    "trigger": _trigger,
    "offsets": _offsets,
    "utc_time": _utc_time,
    "folder": _folder,
    "jvm_size": lambda v: None if _JVM_SIZE.match(v) else
    "is not a JVM memory size (e.g. 512m, 2g)",
    "spark_size": lambda v: None if _SPARK_SIZE.match(v) else
    "is not a memory size (e.g. 512m, 2g)",
    "spark_master": lambda v: None if _SPARK_MASTER.match(v) else
    "is not a Spark master (local, local[N], local[*], spark://host:port, yarn, k8s://...)",
    "jvm_option": lambda v: None if v.startswith("-") else "is not a JVM option (e.g. -Xss1m)",
    "nonempty": lambda v: None if v.strip() else "must not be empty",
    "spark_key": lambda v: None if v.startswith("spark.") else "is not a spark.* setting",
    "ordered_pair": lambda v: None if v[0] < v[1] else "must be [low, high] with low < high",
    "log_level": lambda v: None if v.upper() in (*LOG_LEVELS, "WARN") else
    f"is not one of {', '.join(LOG_LEVELS)}",
}
_BOUNDS: dict[str, tuple[Any, str]] = {
    "ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<"),
}


def _check(rules: Mapping[str, Any], value: Any, key: str) -> None:
    """Refuse ``value`` of ``key`` unless it meets the field's ``rules`` (metadata)."""
    if value is None or not rules:
        return
    if isinstance(value, Mapping):
        if "keys" in rules or "key_form" in rules:
            for k in value:
                if "keys" in rules and k not in rules["keys"]:
                    raise ConfigError(f"{key}: unknown key {k!r}; known: "
                                      f"{', '.join(rules['keys'])}", key)
                _check({"form": rules["key_form"]} if "key_form" in rules else {}, k, key)
        each = {n: r for n, r in rules.items() if n not in ("keys", "key_form")}
        for k, v in value.items():
            _check(each, v, f"{key}.{k}")
        return
    if isinstance(value, tuple) and rules.get("form") != "ordered_pair":
        for i, item in enumerate(value):
            _check(rules, item, f"{key}[{i}]")
        return
    shown = str(value) if isinstance(value, Path) else value
    for name, (ok, op) in _BOUNDS.items():
        if name in rules and not ok(value, rules[name]):
            why = f" ({rules['why']})" if "why" in rules else ""
            raise ConfigError(f"{key}: {shown!r} must be {op} {rules[name]:g}{why}", key)
    if "range" in rules:
        lo, hi = rules["range"]
        if not lo <= value <= hi:
            raise ConfigError(f"{key}: {shown!r} must be between {lo} and {hi}", key)
    if "choices" in rules and value not in rules["choices"]:
        raise ConfigError(f"{key}: {shown!r} is not one of {', '.join(rules['choices'])}", key)
    if "form" in rules:
        problem = _FORMS[rules["form"]](value)
        if problem:
            raise ConfigError(f"{key}: {list(value) if isinstance(value, tuple) else shown!r} "
                              f"{problem}", key)


@dataclass(frozen=True)
class PathsConfig:
    data_dir: Path = field(default=Path("data"), metadata={"form": "folder"})
    lakehouse_root: Path | None = field(default=None, metadata={"form": "folder"})
    checkpoint_root: Path | None = field(default=None, metadata={"form": "folder"})
    deps_dir: Path = field(default=REPO_ROOT / ".deps", metadata={"form": "folder"})

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
    controller_port: int | None = field(default=None, metadata={"range": PORTS})
    heap: str = field(default="512m", metadata={"form": "jvm_size"})
    # Two cores shared with Spark: C1 only and the serial collector halve the broker's CPU in
    # the first two minutes (28-33 -> 16-19 CPU s); it still serves far more than Spark reads.
    jvm_options: tuple[str, ...] = field(default=("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"),
                                         metadata={"form": "jvm_option"})
    start_timeout_s: float = field(default=60.0, metadata={"gt": 0})
    stop_timeout_s: float = field(default=30.0, metadata={"gt": 0})
    # The client listener binds here (the KRaft controller always binds 127.0.0.1; clients are
    # told kafka.bootstrap's host): loopback unless set otherwise, explicitly.
    bind_address: str = field(default="127.0.0.1", metadata={"form": "ip"})
    # SASL_SSL (SCRAM-SHA-512) with a certificate generated on first start (`kafka start
    # --secure`); clients with no kafka.client.security_protocol then use its credentials.
    secure: bool = False


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
# Client property names whose values are credentials: never in the YAML, never logged.
SECRET_PROPERTY = re.compile(r"(?i)password|secret|jaas|token|\.key$")


@dataclass(frozen=True)
class KafkaClientConfig:
    """How every Kafka client connects (translated per client by `jobs.kafka_client`).

    ``security_protocol`` unset: PLAINTEXT, or the project's secure broker's SASL_SSL when
    kafka.broker.secure. The password comes from KAFKA_SASL_PASSWORD or the file named by
    KAFKA_SASL_PASSWORD_FILE, never from the YAML. ``properties`` reach every client verbatim
    (Java and librdkafka names; kafka-python gets them with dots as underscores).
    """

    security_protocol: str | None = None  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str | None = None     # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: Path | None = None
    ssl_ca_file: Path | None = None       # PEM certificate(s) the broker's must chain to
    ssl_cert_file: Path | None = None     # PEM client certificate (mutual TLS), key included
    ssl_key_file: Path | None = None      # PEM client key, if not in ssl_cert_file
    ssl_check_hostname: bool = True
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.security_protocol is not None and \
                self.security_protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(f"kafka.client.security_protocol: {self.security_protocol!r} is "
                              f"not one of {', '.join(SECURITY_PROTOCOLS)}")
        if self.sasl_mechanism is not None and self.sasl_mechanism not in SASL_MECHANISMS:
            raise ConfigError(f"kafka.client.sasl_mechanism: {self.sasl_mechanism!r} is not "
                              f"one of {', '.join(SASL_MECHANISMS)}")

    def __repr__(self) -> str:
        props = {k: "***" if SECRET_PROPERTY.search(k) else v for k, v in self.properties.items()}
        return (f"KafkaClientConfig(security_protocol={self.security_protocol!r}, "
                f"sasl_mechanism={self.sasl_mechanism!r}, username={self.username!r}, "
                f"password={'***' if self.password else None}, "
                f"password_file={self.password_file!r}, ssl_ca_file={self.ssl_ca_file!r}, "
                f"ssl_cert_file={self.ssl_cert_file!r}, ssl_key_file={self.ssl_key_file!r}, "
                f"ssl_check_hostname={self.ssl_check_hostname!r}, properties={props!r})")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str = field(default="127.0.0.1:9092", metadata={"form": "host_port"})
    topic_in: str = field(default="iot-sensors", metadata={"form": "topic"})
    topic_alerts: str = field(default="iot-alerts", metadata={"form": "topic"})
    partitions_in: int = field(default=6, metadata={"ge": 1})
    partitions_alerts: int = field(default=3, metadata={"ge": 1})
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    client: KafkaClientConfig = field(default_factory=KafkaClientConfig)

    @property
    def host(self) -> str:
        return self.bootstrap.split(",")[0].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def controller_port(self) -> int:
        return self.broker.controller_port or self.port + 1

    def _consistency(self) -> str | None:
        if self.topic_in == self.topic_alerts:
            return f"topic_alerts must differ from topic_in (both {self.topic_in!r})"
        if self.controller_port == self.port or self.controller_port > PORTS[1]:
            return (f"broker.controller_port {self.controller_port} must be a free port other "
                    f"than the broker's {self.port} (set kafka.broker.controller_port)")
        return None


@dataclass(frozen=True)
class SparkConfig:
    master: str = field(default="local[8]", metadata={"form": "spark_master"})
    app_name: str = field(default="iot-lakehouse", metadata={"form": "nonempty"})
    shuffle_partitions: int = field(default=2, metadata={"ge": 1})
    driver_memory: str = field(default="2g", metadata={"form": "spark_size"})
    ui_enabled: bool = True
    # The driver's RPC, block manager and UI listen here (the UI by SPARK_LOCAL_IP): loopback
    # unless set otherwise, explicitly.
    bind_address: str = field(default="127.0.0.1", metadata={"form": "ip"})
    extra: Mapping[str, str] = field(default_factory=dict, metadata={"key_form": "spark_key"})


@dataclass(frozen=True)
class StreamingConfig:
    trigger_interval: str = field(default="5 seconds", metadata={"form": "trigger"})
    max_offsets_per_trigger: int = field(default=200_000, metadata={"ge": 1})
    watermark: str = field(default="10 minutes", metadata={"form": "delay"})
    starting_offsets: str = field(default="earliest", metadata={"form": "offsets"})
    source: str = field(default="kafka", metadata={"choices": STREAM_SOURCES})
    files_dir: Path | None = field(default=None,  # default: <data_dir>/incoming
                                   metadata={"form": "folder"})
    socket_host: str = field(default="127.0.0.1", metadata={"form": "host"})
    socket_port: int = field(default=9999, metadata={"range": PORTS})
    # Delta-to-Delta streams (silver, gold)
    max_files_per_trigger: int = field(default=1000, metadata={"ge": 1})
    # failed query restarts before the runner gives up
    max_restarts: int = field(default=5, metadata={"ge": 0})
    # first back-off, doubled each restart (max 60 s)
    restart_backoff_s: float = field(default=2.0, metadata={"ge": 0})
    # this long without a failure resets the restart count
    healthy_reset_s: float = field(default=300.0, metadata={"gt": 0})
    # gold aggregates start at most this long after the rest
    deferred_start_s: float = field(default=300.0, metadata={"ge": 0})
    # gold/pipeline_metrics: one append per flush
    metrics_flush_s: float = field(default=5.0, metadata={"gt": 0})
    # Micro-batch interval per query (name -> interval); trigger_interval for the others.
    triggers: Mapping[str, str] = field(default_factory=dict,
                                        metadata={"keys": TRIGGER_QUERIES, "form": "trigger"})
    # Static thresholds in Spark's Real-Time Mode (a Kafka source only). The batch is the
    # query's checkpoint interval, not a latency.
    realtime_alerts: bool = True
    realtime_batch: str = field(default="5 minutes", metadata={"form": "window"})

    def trigger_for(self, query: str) -> str:
        return self.triggers.get(query, self.trigger_interval)

    @property
    def watermark_s(self) -> int:
        return interval_seconds(self.watermark)


@dataclass(frozen=True)
class ValidationConfig:
    """Silver's rules; ranges are inclusive [low, high]."""

    temperature: tuple[float, float] = field(default=(-50.0, 50.0),
                                             metadata={"form": "ordered_pair"})
    humidity: tuple[float, float] = field(default=(0.0, 100.0), metadata={"form": "ordered_pair"})
    pressure: tuple[float, float] = field(default=(870.0, 1085.0),
                                          metadata={"form": "ordered_pair"})
    max_future: str = field(default="1 day", metadata={"form": "delay"})
    min_event_time: str = field(default="1900-01-01T00:00:00Z", metadata={"form": "utc_time"})
    dedup_watermark: str = field(default="10 minutes", metadata={"form": "delay"})

    def ranges(self) -> dict[str, tuple[float, float]]:
        return {"temperature": self.temperature, "humidity": self.humidity,
                "pressure": self.pressure}


@dataclass(frozen=True)
class HighThreshold:
    threshold: float
    critical_above: float

    def _consistency(self) -> str | None:
        if self.critical_above > self.threshold:
            return None
        return (f"critical_above ({self.critical_above:g}) must be above threshold "
                f"({self.threshold:g})")


@dataclass(frozen=True)
class LowThreshold:
    threshold: float
    critical_below: float

    def _consistency(self) -> str | None:
        if self.critical_below < self.threshold:
            return None
        return (f"critical_below ({self.critical_below:g}) must be below threshold "
                f"({self.threshold:g})")


@dataclass(frozen=True)
class RapidChange:
    delta: float = field(default=5.0, metadata={"gt": 0})
    within_s: int = field(default=60, metadata={"ge": 1})


@dataclass(frozen=True)
class Trailing:
    window_s: int = field(default=1800, metadata={"ge": 1})
    min_readings: int = field(default=10, metadata={"ge": 2})  # a standard deviation needs 2
    # production: with fewer than min_readings in window_s, the last min_readings readings
    # when they span at most this long (slow sensors are covered by count, not by time).
    max_span_s: int = field(default=86_400, metadata={"ge": 1})


@dataclass(frozen=True)
class DynamicThreshold:
    k_std: float = field(default=2.0, metadata={"gt": 0})


@dataclass(frozen=True)
class ZScore:
    threshold: float = field(default=3.0, metadata={"gt": 0})
    metrics: tuple[str, ...] = field(default=("temperature", "humidity", "pressure"),
                                     metadata={"choices": METRIC_NAMES})


@dataclass(frozen=True)
class Consecutive:
    count: int = field(default=3, metadata={"ge": 1})


@dataclass(frozen=True)
class RisingTrend:
    minutes: int = field(default=15, metadata={"ge": 1})


@dataclass(frozen=True)
class Offline:
    after_s: int = field(default=600, metadata={"ge": 1})
    # production: offline after max(after_s, interval_factor x the interval_quantile of the
    # sensor's last `gaps` reporting intervals); before it has one, after initial_after_s.
    interval_factor: float = 3.0
    interval_quantile: float = 0.9
    gaps: int = 32
    initial_after_s: int = field(default=7_200, metadata={"ge": 1})


@dataclass(frozen=True)
class AnomalyRule:
    """The adaptive detector (`gold.anomaly`, alert type ANOMALY) as the production profile
    runs it: one per (sensor, metric); the rest of its settings are `AnomalySettings`'."""

    method: str = "seasonal"
    metrics: tuple[str, ...] = ("temperature", "humidity", "pressure")
    enter: float = 6.0
    exit: float = 3.0
    cooldown_s: int = field(default=10_800, metadata={"ge": 0})
    warmup_s: int = field(default=7_200, metadata={"ge": 0})


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
    cooldown_s: int = field(default=900, metadata={"ge": 0})
    severities: Mapping[str, str] = field(
        default_factory=dict, metadata={"keys": RULE_TYPES, "choices": SEVERITY_LEVELS})
    # A sensor's rule state is deleted this long (event time) after its last reading.
    state_ttl_s: int = field(default=7 * 24 * 3600, metadata={"ge": 1})
    # Sensors are hashed into this many grouping keys of the alerts query: one Python call and
    # one timer per key and batch instead of one per sensor. Frozen into the checkpoint.
    key_buckets: int = field(default=64, metadata={"ge": 1})

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

    tumbling: str = field(default="5 minutes", metadata={"form": "window"})
    sliding: str = field(default="10 minutes", metadata={"form": "window"})
    slide: str = field(default="5 minutes", metadata={"form": "window"})
    # rank error <= readings / accuracy
    percentile_accuracy: int = field(default=10_000, metadata={"ge": 1})
    # sensor_status.open_alerts looks back this far
    open_alert_window_s: int = field(default=900, metadata={"ge": 1})
    # alerts (gold/alerts) | silver (static is_alert)
    alert_counts_source: str = field(default="alerts", metadata={"choices": ALERT_COUNT_SOURCES})

    def _consistency(self) -> str | None:
        t, length, step = (interval_seconds(x) for x in (self.tumbling, self.sliding, self.slide))
        if length % t or step % t:
            return (f"sliding ({self.sliding}) and slide ({self.slide}) must be multiples of "
                    f"tumbling ({self.tumbling}): the sliding windows are merged from its buckets")
        if step > length:
            return f"slide ({self.slide}) must not be longer than sliding ({self.sliding})"
        return None


@dataclass(frozen=True)
class MaintenanceConfig:
    """`lakehouse maintain`: OPTIMIZE every table, then VACUUM files older than the retention.

    The retention bounds time travel (versions older than it may lose their files) and must
    outlive any running stream's oldest unread snapshot; Delta refuses less than 168 h unless
    its safety check is disabled, which this project never does.
    """

    retention_hours: float = field(default=168.0, metadata={
        "ge": MIN_RETENTION_HOURS, "why": "Delta's VACUUM safety check, which stays on"})
    optimize: bool = True
    vacuum: bool = True
    # Every table's delta.logRetentionDuration: Delta removes log entries older than this at
    # each checkpoint. It bounds time travel (no version older than it can be read) and how
    # far a stopped reader of a table (gold reading silver) can fall behind and still resume;
    # Delta's default, 30 days, lets a table's `_delta_log` grow to about two million entries
    # at a 5 s trigger. Delta refuses less than the table's deletedFileRetentionDuration
    # (7 days by default), past which VACUUM may remove old versions' files anyway.
    log_retention_hours: float = field(default=168.0, metadata={
        "ge": MIN_RETENTION_HOURS,
        "why": "Delta requires delta.logRetentionDuration >= deletedFileRetentionDuration"})
    # The live appenders (bronze and silver: the partitions they write; gold/alerts and
    # gold/pipeline_metrics: the whole table) compact on every compact_every_batches-th batch
    # or flush (0: never), files below compact_below_mb only
    # (`jobs.streaming.compact_partitions`); `lakehouse maintain` compacts everything else.
    compact_every_batches: int = field(default=50, metadata={"ge": 0})
    compact_below_mb: float = field(default=16.0, metadata={"gt": 0})


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
    log_level: str = field(default="INFO", metadata={"form": "log_level"})

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
    "KAFKA_SECURE": "kafka.broker.secure",
    "KAFKA_SASL_PASSWORD": "kafka.client.password",
    "KAFKA_SASL_PASSWORD_FILE": "kafka.client.password_file",
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
    sources: Mapping[str, str] | None = None,
) -> Config:
    """Read the YAML file, apply environment and explicit overrides, validate every value.

    A bad value raises `ConfigError` with one line naming where it came from (the file, the
    environment variable, or ``sources[key]`` for an override, e.g. ``--set``), the key, the
    value and what is allowed.
    """
    env = os.environ if env is None else env
    path = Path(path or env.get("LAKEHOUSE_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"config file {path} is not valid YAML: {detail}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    _refuse_kafka_secrets(raw, path)
    from_env = {key: env[var] for var, key in ENV_OVERRIDES.items() if env.get(var)}
    merged = _merge(_merge(raw, _nest(from_env)), _nest(overrides or {}))
    try:
        return _build(Config, merged, "")
    except ConfigError as exc:
        env_vars = {key: f"${var}" for var, key in ENV_OVERRIDES.items() if env.get(var)}
        labels = {**env_vars, **{k: (sources or {}).get(k, "override") for k in overrides or {}}}
        origin = _origin(exc.key, labels) or _shown(path)
        raise ConfigError(f"{origin}: {exc}", exc.key) from None


def _origin(key: str | None, labels: Mapping[str, str]) -> str | None:
    """The label of the override or environment variable that set ``key`` (or a part of it)."""
    if not key:
        return None
    found = [label for k, label in labels.items()
             if k == key or key.startswith((f"{k}.", f"{k}[")) or k.startswith(f"{key}.")]
    return found[-1] if found else None  # overrides come last: they win


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _refuse_kafka_secrets(raw: Mapping[str, Any], path: Path) -> None:
    """A Kafka credential in the (versioned) config file is refused, naming the way instead."""
    kafka = raw.get("kafka")
    client = kafka.get("client") if isinstance(kafka, Mapping) else None
    if not isinstance(client, Mapping):
        return
    if client.get("password") is not None:
        raise ConfigError(f"{path}: kafka.client.password must not be in the config file; set "
                          "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE (a file outside "
                          "the repository) instead")
    props = client.get("properties")
    secret = sorted(k for k in props if SECRET_PROPERTY.search(str(k))) \
        if isinstance(props, Mapping) else []
    if secret:
        raise ConfigError(f"{path}: kafka.client.properties {secret} hold credentials and must "
                          "not be in the config file; use kafka.client.username with "
                          "KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE instead")


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
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}", where or None)
    hints = get_type_hints(cls)
    rules = {f.name: f.metadata for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(rules))
    if unknown:
        first = f"{where}.{unknown[0]}" if where else str(unknown[0])
        raise ConfigError(f"unknown config key(s) {unknown} in {where or 'top level'}; known: "
                          f"{', '.join(rules)}", first)
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
        _check(rules[name], kwargs[name], key)
    try:
        obj = cls(**kwargs)
    except ConfigError as exc:
        exc.key = exc.key or where or None
        raise
    consistency = getattr(obj, "_consistency", None)
    problem = consistency() if consistency else None
    if problem:
        raise ConfigError(f"{where}: {problem}" if where else problem, where or None)
    return obj


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        return _build(hint, value or {}, key)
    optional = hint in (Path | None, int | None, float | None, str | None)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} must not be empty", key)
    base = {Path | None: Path, int | None: int, float | None: float, str | None: str}.get(
        hint, hint
    )
    try:
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ValueError(value)
                return value.lower() in {"true", "1", "yes"}
            if not isinstance(value, bool) and value not in (0, 1):
                raise ValueError(value)
            return bool(value)
        if base in (int, float, str, Path):
            if base is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if base in (int, float) and isinstance(value, bool):
                raise ValueError(value)
            return base(value)
        if getattr(base, "__origin__", None) is tuple:
            args = base.__args__
            # --set and the environment give a list as one comma-separated string
            items = [v.strip() for v in value.split(",") if v.strip()] \
                if isinstance(value, str) else list(value)
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
        raise ConfigError(f"{key}: cannot use {value!r} as {kind}", key) from exc
    return value
