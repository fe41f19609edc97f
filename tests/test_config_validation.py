"""Every setting is checked at load: one line naming the source, the key, the value and the rule.

Pure tests: no Spark session, no broker.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.config import (
    LOG_LEVELS,
    SEVERITY_LEVELS,
    TRIGGER_QUERIES,
    ConfigError,
    load_config,
)

# (overrides, the message: the key, the bad value and what is allowed)
BAD_OVERRIDES: list[tuple[dict[str, object], str]] = [
    ({"kafka.bootstrap": "nohost"}, "kafka.bootstrap: 'nohost' is not host:port"),
    ({"kafka.bootstrap": "127.0.0.1:"}, "kafka.bootstrap: '127.0.0.1:' is not host:port"),
    ({"kafka.bootstrap": "127.0.0.1:70000"}, "kafka.bootstrap: '127.0.0.1:70000' is not host"),
    ({"kafka.bootstrap": "a:9092,,b:9092"}, "kafka.bootstrap: 'a:9092,,b:9092' is not host"),
    ({"kafka.bootstrap": "bad host:9092"}, "kafka.bootstrap: 'bad host:9092' is not host"),
    ({"kafka.topic_in": "iot sensors"}, "kafka.topic_in: 'iot sensors' is not a Kafka topic"),
    ({"kafka.topic_alerts": "iot-sensors"}, "kafka: topic_alerts must differ from topic_in"),
    ({"kafka.partitions_in": 0}, "kafka.partitions_in: 0 must be >= 1"),
    ({"kafka.partitions_alerts": -3}, "kafka.partitions_alerts: -3 must be >= 1"),
    ({"kafka.broker.controller_port": 0}, "kafka.broker.controller_port: 0 must be between 1 "
                                          "and 65535"),
    ({"kafka.broker.controller_port": 9092}, "kafka: broker.controller_port 9092 must be a free"),
    ({"kafka.bootstrap": "127.0.0.1:65535"}, "broker.controller_port 65536"),
    ({"kafka.broker.heap": "lots"}, "kafka.broker.heap: 'lots' is not a JVM memory size"),
    ({"kafka.broker.jvm_options": ["UseSerialGC"]},
     r"kafka.broker.jvm_options\[0\]: 'UseSerialGC' is not a JVM option"),
    ({"kafka.broker.start_timeout_s": 0}, "kafka.broker.start_timeout_s: 0.0 must be > 0"),
    ({"spark.master": "local[0]"}, r"spark.master: 'local\[0\]' is not a Spark master"),
    ({"spark.master": "cluster"}, "spark.master: 'cluster' is not a Spark master"),
    ({"spark.shuffle_partitions": 0}, "spark.shuffle_partitions: 0 must be >= 1"),
    ({"spark.driver_memory": "2 GB"}, "spark.driver_memory: '2 GB' is not a memory size"),
    ({"spark.app_name": " "}, "spark.app_name: ' ' must not be empty"),
    ({"spark.extra": {"sql.shuffle.partitions": "4"}},
     "spark.extra: 'sql.shuffle.partitions' is not a spark.* setting"),
    ({"streaming.trigger_interval": "5 secs please"},
     "streaming.trigger_interval: '5 secs please' is not an interval"),
    ({"streaming.trigger_interval": "soon"}, "streaming.trigger_interval: 'soon' is not an"),
    ({"streaming.triggers": {"bronz": "1 second"}},
     "streaming.triggers: unknown key 'bronz'; known: bronze, silver"),
    ({"streaming.triggers": {"alerts": "1 sekond"}},
     "streaming.triggers.alerts: '1 sekond' is not an interval"),
    ({"streaming.watermark": "ten minutes"}, "streaming.watermark: 'ten minutes' is not an"),
    ({"streaming.realtime_batch": "0 seconds"},
     "streaming.realtime_batch: '0 seconds' must be a positive interval"),
    ({"streaming.starting_offsets": "newest"},
     "streaming.starting_offsets: 'newest' is not earliest, latest or a JSON object"),
    ({"streaming.source": "mqtt"}, "streaming.source: 'mqtt' is not one of kafka, files, socket"),
    ({"streaming.socket_port": 99999}, "streaming.socket_port: 99999 must be between 1 and"),
    ({"streaming.socket_host": "no host"}, "streaming.socket_host: 'no host' is not a host"),
    ({"streaming.max_offsets_per_trigger": 0}, "streaming.max_offsets_per_trigger: 0 must be"),
    ({"streaming.max_files_per_trigger": 0}, "streaming.max_files_per_trigger: 0 must be >= 1"),
    ({"streaming.max_restarts": -1}, "streaming.max_restarts: -1 must be >= 0"),
    ({"streaming.restart_backoff_s": -1}, "streaming.restart_backoff_s: -1.0 must be >= 0"),
    ({"streaming.healthy_reset_s": 0}, "streaming.healthy_reset_s: 0.0 must be > 0"),
    ({"streaming.metrics_flush_s": 0}, "streaming.metrics_flush_s: 0.0 must be > 0"),
    ({"validation.temperature": [50, -50]},
     r"validation.temperature: \[50.0, -50.0\] must be \[low, high\] with low < high"),
    ({"validation.humidity": [10, 10]}, r"validation.humidity: \[10.0, 10.0\] must be \[low"),
    ({"validation.pressure": [870.0]}, "validation.pressure: cannot use"),
    ({"validation.max_future": "1 fortnight"}, "validation.max_future: '1 fortnight' is not an"),
    ({"validation.min_event_time": "yesterday"},
     "validation.min_event_time: 'yesterday' is not an ISO-8601 time"),
    ({"validation.min_event_time": "1900-01-01T00:00:00"},
     "validation.min_event_time: '1900-01-01T00:00:00' needs a time zone"),
    ({"validation.dedup_watermark": "10"}, "validation.dedup_watermark: '10' is not an interval"),
    ({"gold.tumbling": "0 minutes"}, "gold.tumbling: '0 minutes' must be a positive interval"),
    ({"gold.slide": "3 minutes"}, r"gold: sliding \(10 minutes\) and slide \(3 minutes\) must "
                                  "be multiples of tumbling"),
    ({"gold.sliding": "7 minutes"}, "must be multiples of tumbling"),
    ({"gold.slide": "15 minutes"}, r"gold: slide \(15 minutes\) must not be longer than sliding"),
    ({"gold.percentile_accuracy": 0}, "gold.percentile_accuracy: 0 must be >= 1"),
    ({"gold.alert_counts_source": "bronze"},
     "gold.alert_counts_source: 'bronze' is not one of alerts, silver"),
    ({"maintenance.retention_hours": 24},
     "maintenance.retention_hours: 24.0 must be >= 168 .Delta's VACUUM safety check"),
    ({"maintenance.log_retention_hours": 24},
     "maintenance.log_retention_hours: 24.0 must be >= 168 .Delta requires"),
    ({"log_level": "LOUD"},
     "log_level: 'LOUD' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ({"alerts.high_temp.critical_above": 25},
     r"alerts.high_temp: critical_above \(25\) must be above threshold \(30\)"),
    ({"alerts.high_humidity.critical_above": 80},
     r"alerts.high_humidity: critical_above \(80\) must be above threshold \(80\)"),
    ({"alerts.low_temp.critical_below": 12},
     r"alerts.low_temp: critical_below \(12\) must be below threshold \(10\)"),
    ({"alerts.rapid_change.delta": 0}, "alerts.rapid_change.delta: 0.0 must be > 0"),
    ({"alerts.rapid_change.within_s": 0}, "alerts.rapid_change.within_s: 0 must be >= 1"),
    ({"alerts.trailing.min_readings": 1}, "alerts.trailing.min_readings: 1 must be >= 2"),
    ({"alerts.dynamic_threshold.k_std": -1}, "alerts.dynamic_threshold.k_std: -1.0 must be > 0"),
    ({"alerts.zscore.metrics": ["temperature", "co2"]},
     r"alerts.zscore.metrics\[1\]: 'co2' is not one of temperature, humidity, pressure"),
    ({"alerts.consecutive.count": 0}, "alerts.consecutive.count: 0 must be >= 1"),
    ({"alerts.rising_trend.minutes": 0}, "alerts.rising_trend.minutes: 0 must be >= 1"),
    ({"alerts.offline.after_s": 0}, "alerts.offline.after_s: 0 must be >= 1"),
    ({"alerts.state_ttl_s": 0}, "alerts.state_ttl_s: 0 must be >= 1"),
    ({"alerts.key_buckets": 0}, "alerts.key_buckets: 0 must be >= 1"),
    ({"alerts.cooldown_s": -5}, "alerts.cooldown_s: -5 must be >= 0"),
    ({"alerts.severities.ANOMALY": "LOUD"},
     "alerts.severities.ANOMALY: 'LOUD' is not one of INFO, WARNING, CRITICAL"),
    ({"alerts.severities.HEAT": "INFO"}, "alerts.severities: unknown key 'HEAT'; known: HIGH_T"),
    ({"kafak.bootstrap": "x:1"}, r"unknown config key\(s\) \['kafak'\] in top level; known: "
                                 "paths, kafka"),
    ({"spark.shuffle_partition": 2}, r"unknown config key\(s\) \['shuffle_partition'\] in spark"),
    ({"spark.ui_enabled": 5}, "spark.ui_enabled: cannot use 5 as bool"),
    ({"kafka.partitions_in": True}, "kafka.partitions_in: cannot use True as int"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_OVERRIDES,
                         ids=[next(iter(o)) for o, _ in BAD_OVERRIDES])
def test_a_bad_override_is_refused_naming_key_value_and_rule(overrides: dict[str, object],
                                                             message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        load_config(env={}, overrides=overrides)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("override: "), text  # the source of the value comes first


@pytest.mark.parametrize(("var", "value", "message"), [
    ("KAFKA_BOOTSTRAP", "nohost",
     r"^\$KAFKA_BOOTSTRAP: kafka.bootstrap: 'nohost' is not host:port \(e.g. 127.0.0.1:9092"),
    ("LAKEHOUSE_LOG_LEVEL", "LOUD", r"^\$LAKEHOUSE_LOG_LEVEL: log_level: 'LOUD' is not one of"),
    ("SPARK_SHUFFLE_PARTITIONS", "0", r"^\$SPARK_SHUFFLE_PARTITIONS: spark.shuffle_partitions"),
    ("SPARK_SHUFFLE_PARTITIONS", "many", r"^\$SPARK_SHUFFLE_PARTITIONS: .*cannot use 'many'"),
    ("SPARK_MASTER", "locale", r"^\$SPARK_MASTER: spark.master: 'locale' is not a Spark"),
    ("SPARK_DRIVER_MEMORY", "lots", r"^\$SPARK_DRIVER_MEMORY: spark.driver_memory: 'lots'"),
    ("LAKEHOUSE_TOPIC_IN", "a/b", r"^\$LAKEHOUSE_TOPIC_IN: kafka.topic_in: 'a/b' is not a"),
    ("LAKEHOUSE_TOPIC_ALERTS", "iot-sensors",
     r"^\$LAKEHOUSE_TOPIC_ALERTS: kafka: topic_alerts must differ from topic_in"),
])
def test_a_bad_environment_variable_is_named(var: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={var: value})


def test_an_override_beats_the_environment_in_the_message() -> None:
    with pytest.raises(ConfigError, match=r"^--set: kafka.bootstrap: 'x' is not host:port"):
        load_config(env={"KAFKA_BOOTSTRAP": "127.0.0.1:1"}, overrides={"kafka.bootstrap": "x"},
                    sources={"kafka.bootstrap": "--set"})


def test_a_bad_value_in_the_file_names_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "pipeline.yaml"
    conf.write_text("kafka:\n  partitions_in: 0\n")
    with pytest.raises(ConfigError, match=rf"^{conf}: kafka.partitions_in: 0 must be >= 1$"):
        load_config(conf, env={})


def test_a_typo_in_the_file_is_refused_not_ignored(tmp_path: Path) -> None:
    conf = tmp_path / "pipeline.yaml"
    conf.write_text("streaming:\n  trigger_intervall: 1 second\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['trigger_intervall'\] in "
                                          "streaming; known: trigger_interval"):
        load_config(conf, env={})


def test_invalid_yaml_is_one_line(tmp_path: Path) -> None:
    conf = tmp_path / "pipeline.yaml"
    conf.write_text("kafka:\n  bootstrap: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML") as info:
        load_config(conf, env={})
    assert "\n" not in str(info.value)


def test_a_folder_setting_that_is_a_file_is_refused(tmp_path: Path) -> None:
    afile = tmp_path / "lake"
    afile.write_text("")
    with pytest.raises(ConfigError, match=f"paths.lakehouse_root: '{afile}' is a file, not a"):
        load_config(env={"LAKEHOUSE_ROOT": str(afile)})


def test_the_shipped_config_and_reasonable_values_load() -> None:
    cfg = load_config(env={})
    assert cfg.streaming.triggers == {"alerts": "1 second", "gold_aggregates": "30 seconds",
                                      "gold_dependents": "30 seconds"}
    good = load_config(env={"KAFKA_BOOTSTRAP": "kafka-1.example.com:9093,10.0.0.2:9093",
                            "SPARK_MASTER": "local[*]", "LAKEHOUSE_LOG_LEVEL": "debug"},
                       overrides={"streaming.trigger_interval": "500 milliseconds",
                                  "streaming.starting_offsets": '{"iot-sensors": {"0": 5}}',
                                  "gold.sliding": "15 minutes", "gold.slide": "5 minutes",
                                  "validation.temperature": "-40,60",
                                  "alerts.rules": "ZSCORE_OUTLIER, ANOMALY",
                                  "maintenance.retention_hours": 720,
                                  "kafka.broker.heap": "1g", "spark.driver_memory": "1536m"})
    assert good.kafka.port == 9093
    assert good.validation.temperature == (-40.0, 60.0)
    assert good.alerts.rules == ("ZSCORE_OUTLIER", "ANOMALY")
    for master in ("local", "local[2]", "local[4,2]", "spark://h:7077", "yarn", "k8s://h:443"):
        assert load_config(env={"SPARK_MASTER": master}).spark.master == master
    assert load_config(env={}, overrides={"kafka.bootstrap": "[::1]:9092"}).kafka.port == 9092


def test_the_lists_match_the_code_that_uses_them() -> None:
    import logging

    from gold.schema import SEVERITIES
    from jobs.runner import TRIGGER_KEYS

    assert set(TRIGGER_QUERIES) == set(TRIGGER_KEYS.values())
    assert SEVERITY_LEVELS == SEVERITIES
    assert all(isinstance(logging.getLevelName(level), int) for level in LOG_LEVELS)


def test_bronze_and_silver_run_as_one_query_only_when_both_layers_run() -> None:
    from jobs.runner import starter_refs

    both = [ref for _, ref in starter_refs(["bronze", "silver", "gold"])]
    assert both[0] == "jobs.silver_job:start_with_bronze"
    assert "jobs.bronze_job:start" not in both and "jobs.silver_job:start" not in both
    assert "jobs.alerts_job:start_alerts" in both
    assert [ref for _, ref in starter_refs(["bronze"])] == ["jobs.bronze_job:start"]
    alone = [ref for _, ref in starter_refs(["silver", "gold"])]
    assert alone[0] == "jobs.silver_job:start" and "jobs.bronze_job:start" not in alone
