"""Kafka security: loopback listeners, the `kafka.client` settings in every client's dialect,
and the project's secure broker (SASL_SSL, SCRAM-SHA-512) refusing and accepting clients, with
the whole pipeline running against it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from proc_sockets import LOOPBACK, listening

from jobs import broker, kafka_client
from jobs.cli import cli
from jobs.config import REPO_ROOT, Config, ConfigError, load_config

pytestmark = pytest.mark.timeout(600)

SECRET = "s3cret-Pa55word"


# --- config and dialects (no broker) -------------------------------------------------------


def _yaml(tmp_path: Path, client: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(f"kafka:\n  client:\n{client}")
    return path


def test_password_in_the_config_file_is_refused(tmp_path: Path) -> None:
    path = _yaml(tmp_path, f"    username: app\n    password: {SECRET}\n")
    with pytest.raises(ConfigError, match="KAFKA_SASL_PASSWORD") as err:
        load_config(path, env={})
    assert SECRET not in str(err.value)
    path = _yaml(tmp_path, "    properties: {sasl.jaas.config: 'x password=\"y\";'}\n")
    with pytest.raises(ConfigError, match="sasl.jaas.config"):
        load_config(path, env={})


def test_password_on_the_command_line_is_refused() -> None:
    result = CliRunner().invoke(cli, ["--set", f"kafka.client.password={SECRET}", "kafka",
                                      "status"])
    assert result.exit_code == 2
    assert "KAFKA_SASL_PASSWORD" in result.output


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kafka.broker.bind_address": "localhost"}, "kafka.broker.bind_address"),
        ({"kafka.broker.bind_address": "0.0.0.0:9092"}, "kafka.broker.bind_address"),
        ({"kafka.client.security_protocol": "TLS"}, "kafka.client.security_protocol"),
        ({"kafka.client.sasl_mechanism": "GSSAPI"}, "kafka.client.sasl_mechanism"),
    ],
)
def test_bad_security_settings_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, overrides=overrides)


def test_sasl_without_credentials_names_what_is_missing() -> None:
    cfg = load_config(env={}, overrides={"kafka.client.security_protocol": "SASL_SSL",
                                         "kafka.client.sasl_mechanism": "PLAIN"})
    with pytest.raises(ConfigError, match="username.*KAFKA_SASL_PASSWORD"):
        kafka_client.settings(cfg)


def test_plaintext_clients_get_the_bootstrap_servers_only() -> None:
    client = kafka_client.settings(load_config(env={}))
    assert client.spark_options() == {"kafka.bootstrap.servers": "127.0.0.1:9092"}
    assert client.python_kwargs(KafkaProducer) == {"bootstrap_servers": "127.0.0.1:9092"}
    assert client.librdkafka() == {"bootstrap.servers": "127.0.0.1:9092"}


def test_sasl_ssl_in_each_dialect_without_leaking_the_password(tmp_path: Path) -> None:
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    cfg = load_config(
        _yaml(tmp_path, "    security_protocol: SASL_SSL\n    sasl_mechanism: SCRAM-SHA-512\n"
                        "    username: app\n    ssl_ca_file: ca.pem\n"
                        "    properties: {client.id: lh, request.timeout.ms: '20000'}\n"),
        env={"KAFKA_SASL_PASSWORD_FILE": str(secret_file), "KAFKA_BOOTSTRAP": "kafka.example:9093"})
    client = kafka_client.settings(cfg)
    ca = str(Path("ca.pem").resolve())
    spark = client.spark_options()
    assert spark == {
        "kafka.bootstrap.servers": "kafka.example:9093",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
        "kafka.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule "
                                  f'required username="app" password="{SECRET}";',
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": ca,
        "kafka.client.id": "lh",
        "kafka.request.timeout.ms": "20000",
    }
    assert client.python_kwargs(KafkaProducer) == {
        "bootstrap_servers": "kafka.example:9093", "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "app",
        "sasl_plain_password": SECRET, "ssl_check_hostname": True, "ssl_cafile": ca,
        "client_id": "lh", "request_timeout_ms": 20000,
    }
    assert client.librdkafka() == {
        "bootstrap.servers": "kafka.example:9093", "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "app", "sasl.password": SECRET,
        "ssl.ca.location": ca, "ssl.endpoint.identification.algorithm": "https",
        "client.id": "lh", "request.timeout.ms": "20000",
    }
    for shown in (repr(cfg), repr(cfg.kafka.client), repr(client), client.describe(),
                  str(kafka_client.redact(spark)),
                  str(kafka_client.redact(client.python_kwargs())),
                  str(kafka_client.redact(client.librdkafka()))):
        assert SECRET not in shown, shown
    env_cfg = load_config(env={"KAFKA_SASL_PASSWORD": SECRET})
    assert SECRET not in repr(env_cfg)
    with pytest.raises(ConfigError, match="not a setting of kafka-python's KafkaAdminClient"):
        replace(client, properties={"no.such.setting": "1"}).python_kwargs(KafkaAdminClient)


def test_bind_elsewhere_is_explicit_and_warned(tmp_path: Path) -> None:
    cfg = load_config(env={}, overrides={"paths.data_dir": str(tmp_path),
                                         "kafka.bootstrap": "192.0.2.2:9092"})
    # A loopback listener advertised under a network address: refused before anything starts.
    with pytest.raises(broker.BrokerError, match="kafka.broker.bind_address"):
        broker.start(cfg)
    assert not (tmp_path / "kafka").exists()
    assert broker.bind_warning(cfg) is None
    wide = cfg.with_overrides({"kafka.broker.bind_address": "0.0.0.0"})
    warning = broker.bind_warning(wide)
    assert warning and "0.0.0.0" in warning and "no authentication" in warning
    props = broker.write_server_properties(wide).read_text()
    assert "listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093" in props
    assert "advertised.listeners=PLAINTEXT://192.0.2.2:9092" in props
    assert "controller.quorum.voters=1@127.0.0.1:9093" in props


# --- the suite's PLAINTEXT broker ------------------------------------------------------------


@pytest.mark.kafka
def test_broker_listens_on_loopback_only(kafka_cfg: Config) -> None:
    pid = broker.status(kafka_cfg).pid
    assert pid is not None
    sockets = listening(pid)
    ports = {port for _, port in sockets}
    assert {kafka_cfg.kafka.port, kafka_cfg.kafka.controller_port} <= ports, sockets
    assert {ip for ip, _ in sockets} <= LOOPBACK, sockets


# --- the secure broker -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def secure_cfg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Config]:
    """The project's broker started with --secure on free ports, no password given."""
    data = tmp_path_factory.mktemp("secure-kafka")
    port = broker.free_port_pair()
    cfg = load_config(env={}, overrides={
        "paths.data_dir": str(data), "kafka.bootstrap": f"127.0.0.1:{port}",
        "spark.master": "local[8]", "spark.shuffle_partitions": 2, "spark.ui_enabled": False,
        "spark.driver_memory": "1g", "streaming.trigger_interval": "1 second"})
    result = _cli(cfg, "kafka", "start", "--secure", timeout=180)
    try:
        assert result.returncode == 0, result.stderr
        yield cfg.with_overrides({"kafka.broker.secure": True})
    finally:
        broker.stop(cfg)


def _cli(cfg: Config, *args: str, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`lakehouse` in a subprocess on ``cfg``'s data folder and broker."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "LAKEHOUSE"))}
    full_env.update(env or {})
    cmd = [sys.executable, "-m", "jobs.cli", "--set", f"paths.data_dir={cfg.paths.data_dir}",
           "--set", f"kafka.bootstrap={cfg.kafka.bootstrap}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          cwd=REPO_ROOT, check=False)


@pytest.mark.kafka
def test_secure_broker_material_and_sockets(secure_cfg: Config) -> None:
    folder = kafka_client.secure_dir(secure_cfg)
    password = folder / kafka_client.CLIENT_PASSWORD_FILE
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((secure_cfg.paths.kafka_storage / "server.properties").stat().st_mode) \
        == 0o600
    assert (folder / kafka_client.CA_FILE).read_text().startswith("-----BEGIN CERTIFICATE")
    pid = broker.status(secure_cfg).pid
    assert pid is not None
    sockets = listening(pid)
    assert {secure_cfg.kafka.port, secure_cfg.kafka.controller_port} <= \
        {port for _, port in sockets}, sockets
    assert {ip for ip, _ in sockets} <= LOOPBACK, sockets


@pytest.mark.kafka
def test_anonymous_client_is_refused(secure_cfg: Config) -> None:
    """PLAINTEXT on the SASL_SSL port: the broker drops the connection, no metadata ever."""
    from confluent_kafka import KafkaException, Producer

    plain = kafka_client.ClientSettings(bootstrap=secure_cfg.kafka.bootstrap)
    with pytest.raises(KafkaError):
        KafkaAdminClient(**plain.python_kwargs(KafkaAdminClient), bootstrap_timeout_ms=3000)
    producer = Producer({**plain.librdkafka(), "log_level": 0})
    with pytest.raises(KafkaException):
        producer.list_topics(timeout=3)


@pytest.mark.kafka
def test_wrong_password_is_refused_in_one_line(secure_cfg: Config) -> None:
    t0 = time.monotonic()
    result = _cli(secure_cfg, "topics", "create",
                  env={"KAFKA_SECURE": "1", "KAFKA_SASL_PASSWORD": "wrong-password"})
    took = time.monotonic() - t0
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "refused the credentials" in errors[0] and "wrong-password" not in result.stderr
    assert "Traceback" not in result.stderr
    assert took < 60, took


@pytest.mark.kafka
def test_right_credentials_produce_and_consume(secure_cfg: Config) -> None:
    from generator.sinks import ConfluentKafkaSink, KafkaSink
    from generator.stream import Message
    from jobs.topics import create_topics

    topic = f"secure-{uuid.uuid4().hex[:8]}"
    cfg = secure_cfg.with_overrides({"kafka.topic_in": topic})
    create_topics(cfg, {topic: 2})
    client = kafka_client.settings(cfg)
    for sink_class in (KafkaSink, ConfluentKafkaSink):
        sink = sink_class(cfg.kafka.bootstrap, topic, client=client)
        for i in range(5):
            sink.send(Message(key=f"s{i}".encode(), value=json.dumps({"n": i}).encode(),
                              sensor_id=f"s{i}", event_time=datetime.now(UTC)))
        sink.close()
        assert sink.delivered == 5 and sink.errors == 0
    consumer = KafkaConsumer(topic, **client.python_kwargs(KafkaConsumer),
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        got = [json.loads(m.value)["n"] for m in consumer]
    finally:
        consumer.close()
    assert sorted(got) == sorted(list(range(5)) * 2)


@pytest.mark.spark
@pytest.mark.kafka
def test_pipeline_runs_against_the_secure_broker(secure_cfg: Config, spark,  # noqa: ANN001
                                                  tmp_path: Path) -> None:
    """generate -> bronze -> silver -> gold -> alerts on iot-alerts, all over SASL_SSL."""
    from jobs import tables
    from jobs.runner import run_once

    tag = uuid.uuid4().hex[:8]
    cfg = secure_cfg.with_overrides({"paths.lakehouse_root": str(tmp_path / "lakehouse"),
                                     "kafka.topic_in": f"iot-sensors-{tag}",
                                     "kafka.topic_alerts": f"iot-alerts-{tag}"})
    sets = ["--set", f"kafka.topic_in={cfg.kafka.topic_in}",
            "--set", f"kafka.topic_alerts={cfg.kafka.topic_alerts}"]
    made = _cli(cfg, *sets, "topics", "create", env={"KAFKA_SECURE": "1"})
    assert made.returncode == 0, made.stderr
    # 100 minutes of event time (an event needs 30 to fit before the stream ends): the seeded
    # fleet has three heat spikes, 53 readings above 30 °C.
    sent = _cli(cfg, *sets, "generate", "--sensors", "3", "--count", "300", "--interval", "30",
                "--rate", "5000", "--events", "heat_spike=0.1", "--first-event-after", "0",
                env={"KAFKA_SECURE": "1"})
    assert sent.returncode == 0, sent.stderr
    assert "heat_spike 3" in sent.stdout + sent.stderr

    rows = run_once(spark, cfg, ["bronze", "silver", "gold"])
    assert rows["bronze"] == 300, rows

    def count(table: str) -> int:
        return spark.read.format("delta").load(str(cfg.paths.table(table))).count()

    assert count(tables.BRONZE_RAW) == 300
    assert count(tables.SILVER_READINGS) > 250
    assert count(tables.STATS_5M) > 0
    assert count(tables.ALERTS) > 0
    consumer = KafkaConsumer(cfg.kafka.topic_alerts,
                             **kafka_client.settings(cfg).python_kwargs(KafkaConsumer),
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        alerts = [json.loads(m.value) for m in consumer]
    finally:
        consumer.close()
    assert any(a["alert_type"] == "HIGH_TEMP" for a in alerts), alerts[:3]
