"""The platform on real parts: broker service, topics, Spark+Kafka, Delta time travel, DuckDB."""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from proc_sockets import LOOPBACK, listening

from jobs import broker
from jobs.config import REPO_ROOT, Config, ConfigError, load_config
from jobs.duck import connect
from jobs.topics import create_topics

pytestmark = pytest.mark.timeout(300)


# --- config ------------------------------------------------------------------------------


def test_config_defaults_match_design() -> None:
    cfg = load_config(env={})
    assert cfg.kafka.bootstrap == "127.0.0.1:9092"
    assert (cfg.kafka.topic_in, cfg.kafka.topic_alerts) == ("iot-sensors", "iot-alerts")
    assert (cfg.kafka.partitions_in, cfg.kafka.partitions_alerts) == (6, 3)
    assert cfg.paths.lakehouse == Path("data/lakehouse")
    assert cfg.paths.checkpoint("bronze") == Path("data/lakehouse/_checkpoints/bronze").resolve()
    assert cfg.kafka.controller_port == 9093
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.kafka.bootstrap = "x"  # type: ignore[misc]


def test_environment_overrides_config_file() -> None:
    cfg = load_config(env={"LAKEHOUSE_ROOT": "/tmp/lh", "KAFKA_BOOTSTRAP": "127.0.0.1:29092",
                           "SPARK_MASTER": "spark://h:7077", "SPARK_SHUFFLE_PARTITIONS": "3",
                           "LAKEHOUSE_TOPIC_IN": "in2"})
    assert cfg.paths.table("gold/alerts") == Path("/tmp/lh/gold/alerts")
    assert (cfg.kafka.host, cfg.kafka.port) == ("127.0.0.1", 29092)
    assert cfg.kafka.controller_port == 29093
    assert cfg.spark.master == "spark://h:7077"
    assert cfg.spark.shuffle_partitions == 3
    assert cfg.kafka.topic_in == "in2"
    # explicit overrides (CLI flags) beat the environment
    cfg2 = load_config(env={"SPARK_SHUFFLE_PARTITIONS": "3"},
                       overrides={"spark.shuffle_partitions": "5"})
    assert cfg2.spark.shuffle_partitions == 5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"spark.shuffle_partitions": "many"}, "spark.shuffle_partitions"),
        ({"spark.no_such_key": 1}, "no_such_key"),
        ({"spark.ui_enabled": "perhaps"}, "spark.ui_enabled"),
        ({"spark.bind_address": "localhost:4040"}, "spark.bind_address"),
        ({"kafka": 3}, "kafka"),
    ],
)
def test_bad_config_names_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, overrides=overrides)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml", env={})


def test_setup_fails_clearly_without_java(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("dirname", "sed", "head"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    result = subprocess.run(
        ["/bin/bash", str(REPO_ROOT / "scripts" / "setup.sh")],
        env={"PATH": str(bin_dir)}, capture_output=True, text=True, check=False,
    )
    assert result.returncode != 0
    assert "java not found" in result.stderr


# --- broker ------------------------------------------------------------------------------


def _produce(cfg: Config, topic: str, n: int, tag: str) -> None:
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all")
    for i in range(n):
        producer.send(topic, key=f"SENSOR_{i % 7:03d}".encode(), value=f"{tag}-{i}".encode())
    producer.flush()
    producer.close()


def _consume_all(cfg: Config, topic: str, partitions: int) -> list[str]:
    consumer = KafkaConsumer(bootstrap_servers=cfg.kafka.bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=3000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    values = [m.value.decode() for m in consumer]
    consumer.close()
    return values


def test_topics_created_idempotently(kafka_cfg: Config) -> None:
    first = create_topics(kafka_cfg)
    second = create_topics(kafka_cfg)
    assert first == second == {"iot-sensors": 6, "iot-alerts": 3}


def test_produce_consume_round_trip_survives_restart(kafka_cfg: Config) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_cfg, {topic: 3})
    _produce(kafka_cfg, topic, 500, "m")
    expected = sorted(f"m-{i}" for i in range(500))
    assert sorted(_consume_all(kafka_cfg, topic, 3)) == expected

    assert broker.stop(kafka_cfg) is True
    assert not broker.status(kafka_cfg).reachable
    broker.start(kafka_cfg)
    assert sorted(_consume_all(kafka_cfg, topic, 3)) == expected, "broker lost data on restart"


def test_cli_reports_broker_status(kafka_cfg: Config) -> None:
    env = {**os.environ, "LAKEHOUSE_DATA": str(kafka_cfg.paths.data_dir),
           "KAFKA_BOOTSTRAP": kafka_cfg.kafka.bootstrap}
    lakehouse = [sys.executable, "-m", "jobs.cli"]
    up = subprocess.run([*lakehouse, "kafka", "status"], env=env, capture_output=True,
                        text=True, check=False)
    assert up.returncode == 0, up.stderr
    assert "kafka: up" in up.stdout
    down = subprocess.run([*lakehouse, "kafka", "status"],
                          env={**env, "LAKEHOUSE_DATA": str(kafka_cfg.paths.data_dir / "nope"),
                               "KAFKA_BOOTSTRAP": "127.0.0.1:1"},
                          capture_output=True, text=True, check=False)
    assert down.returncode == 1
    assert "kafka: down" in down.stdout


def test_start_refuses_a_port_taken_by_someone_else(kafka_cfg: Config, tmp_path: Path) -> None:
    other = kafka_cfg.with_overrides({"paths.data_dir": str(tmp_path)})
    with pytest.raises(broker.BrokerError, match="taken by another process"):
        broker.start(other)


def test_free_port_pair_is_bindable_and_outside_the_ephemeral_range() -> None:
    """Outgoing connections take ephemeral ports: a broker's pair must not come from there."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(20):
        port = broker.free_port_pair()
        assert port + 1 < low
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", port))
            b.bind(("127.0.0.1", port + 1))


# --- Spark, Delta, DuckDB ----------------------------------------------------------------


def test_spark_batch_reads_kafka_topic(kafka_cfg: Config, spark) -> None:
    topic = f"spark-read-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_cfg, {topic: 2})
    _produce(kafka_cfg, topic, 300, "s")
    df = (spark.read.format("kafka")
          .option("kafka.bootstrap.servers", kafka_cfg.kafka.bootstrap)
          .option("subscribe", topic)
          .option("startingOffsets", "earliest")
          .load())
    rows = df.selectExpr("CAST(value AS STRING) AS v", "partition").collect()
    assert sorted(r.v for r in rows) == sorted(f"s-{i}" for i in range(300))
    assert {r.partition for r in rows} == {0, 1}


def test_delta_time_travel_and_duckdb_scan(spark, table_dir: Path) -> None:
    path = str(table_dir / "tt")
    spark.createDataFrame([(1, "a"), (2, "b")], "id INT, v STRING").write.format("delta").save(path)
    spark.createDataFrame([(3, "c")], "id INT, v STRING").write.format("delta").mode(
        "append").save(path)

    v0 = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert sorted(tuple(r) for r in v0.collect()) == [(1, "a"), (2, "b")]
    now = spark.read.format("delta").load(path)
    assert now.count() == 3
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect()
    assert [h.version for h in history] == [1, 0]

    con = connect()
    assert con.execute(f"SELECT id, v FROM delta_scan('{path}') ORDER BY id").fetchall() == [
        (1, "a"), (2, "b"), (3, "c")]
    assert con.execute(
        f"SELECT id FROM delta_scan('{path}', version => 0) ORDER BY id").fetchall() == [(1,), (2,)]


def test_spark_jvm_maps_the_class_archive_setup_built(base_cfg: Config, spark) -> None:  # noqa: ANN001
    """scripts/setup.sh builds the driver JVM's class archive; the session's JVM maps it."""
    from jobs.jvm_archive import archive_path

    archive = archive_path(base_cfg)
    assert archive.is_file(), f"no class archive at {archive}: see .deps/cds/build.log"
    jvm = spark.sparkContext._jvm  # noqa: SLF001
    diagnostics = jvm.java.lang.management.ManagementFactory.getPlatformMXBean(
        jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
    assert diagnostics.getVMOption("SharedArchiveFile").getValue() == str(archive.resolve())
    # UseSharedSpaces turns false when the JVM could not map an archive.
    assert diagnostics.getVMOption("UseSharedSpaces").getValue() == "true"


def test_broker_jvm_maps_its_class_archive(kafka_cfg: Config) -> None:
    """The broker's archive (same set-up step) is mapped into the running broker's memory."""
    from jobs.jvm_archive import KAFKA_BROKER, archive_path

    archive = archive_path(kafka_cfg, KAFKA_BROKER)
    assert archive.is_file(), f"no class archive at {archive}: see .deps/cds/build.log"
    pid = broker.status(kafka_cfg).pid
    assert pid is not None
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert str(archive.resolve()) in maps  # a JVM that rejects the archive does not map it


def test_spark_listens_on_loopback_only(base_cfg: Config, spark) -> None:  # noqa: ANN001
    """The driver's RPC and block manager (and the UI, by SPARK_LOCAL_IP) bind 127.0.0.1."""
    jvm = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())  # noqa: SLF001
    sockets = listening(jvm)
    assert sockets, "the Spark JVM listens on nothing?"
    assert {ip for ip, _ in sockets} <= LOOPBACK, sockets
    assert os.environ["SPARK_LOCAL_IP"] == base_cfg.spark.bind_address == "127.0.0.1"
    assert spark.conf.get("spark.ui.killEnabled") == "false"
