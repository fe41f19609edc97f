"""Every Kafka client's connection settings, from `kafka.client`, in each client's dialect.

One `ClientSettings` per config (`settings(cfg)`), turned into Spark's ``kafka.``-prefixed
source/sink options, kafka-python keyword arguments or a librdkafka (confluent-kafka) dict.
With PLAINTEXT and no properties each dialect holds the bootstrap servers only, as the
clients were built before. Credentials stay out of every repr and log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.config import SECRET_PROPERTY, Config, ConfigError, KafkaConfig

logger = logging.getLogger(__name__)
# The probe's librdkafka log: each refused attempt is an error line there; the caller says it once.
_PROBE_LOG = logging.getLogger(f"{__name__}.probe")
_PROBE_LOG.propagate = False
_PROBE_LOG.addHandler(logging.NullHandler())

# The project's own secure broker (`lakehouse kafka start --secure`).
SECURE_MECHANISM = "SCRAM-SHA-512"
SECURE_USER = "lakehouse"
CA_FILE = "ca.pem"
CLIENT_PASSWORD_FILE = "client.password"

_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
REDACTED = "***"


def secure_dir(cfg: Config) -> Path:
    """Certificate, keystore and generated passwords of the project's secure broker."""
    return cfg.paths.kafka_storage / "secure"


@dataclass(frozen=True)
class ClientSettings:
    """Resolved connection settings of one cluster (the password read, paths absolute)."""

    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_check_hostname: bool = True
    properties: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.sasl and not (self.sasl_mechanism and self.username and self.password):
            missing = [name for name, v in (("kafka.client.sasl_mechanism", self.sasl_mechanism),
                                            ("kafka.client.username", self.username),
                                            ("a password (KAFKA_SASL_PASSWORD or "
                                             "KAFKA_SASL_PASSWORD_FILE)", self.password))
                       if not v]
            raise ConfigError(f"kafka.client.security_protocol {self.security_protocol} needs "
                              + ", ".join(missing))

    def __repr__(self) -> str:
        return (f"ClientSettings(bootstrap={self.bootstrap!r}, "
                f"security_protocol={self.security_protocol!r}, "
                f"sasl_mechanism={self.sasl_mechanism!r}, username={self.username!r}, "
                f"password={REDACTED if self.password else None}, "
                f"ssl_ca_file={self.ssl_ca_file!r}, ssl_cert_file={self.ssl_cert_file!r}, "
                f"properties={redact(self.properties)!r})")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    def describe(self) -> str:
        """One line for logs and messages: where and how, never the password."""
        who = f" as {self.username} ({self.sasl_mechanism})" if self.sasl else ""
        return f"{self.bootstrap} over {self.security_protocol}{who}"

    def jaas_config(self) -> str:
        """The Java client's ``sasl.jaas.config`` (holds the password: never log it)."""
        return (f'{_LOGIN_MODULES[self.sasl_mechanism or ""]} required '
                f'username="{_jaas_quote(self.username or "")}" '
                f'password="{_jaas_quote(self.password or "")}";')

    def java_properties(self) -> dict[str, str]:
        """Java client properties (Spark's connector takes them with a ``kafka.`` prefix)."""
        out = {"bootstrap.servers": self.bootstrap}
        if self.security_protocol != "PLAINTEXT":
            out["security.protocol"] = self.security_protocol
        if self.sasl:
            out["sasl.mechanism"] = self.sasl_mechanism or ""
            out["sasl.jaas.config"] = self.jaas_config()
        if self.tls:
            if self.ssl_ca_file:
                out["ssl.truststore.type"] = "PEM"
                out["ssl.truststore.location"] = str(self.ssl_ca_file)
            if self.ssl_cert_file:
                if self.ssl_key_file not in (None, self.ssl_cert_file):
                    raise ConfigError("kafka.client.ssl_key_file: the Java client (Spark) reads "
                                      "the client key from the certificate's PEM file; put "
                                      "both in ssl_cert_file and leave ssl_key_file unset")
                out["ssl.keystore.type"] = "PEM"
                out["ssl.keystore.location"] = str(self.ssl_cert_file)
            if not self.ssl_check_hostname:
                out["ssl.endpoint.identification.algorithm"] = ""
        out.update(self.properties)
        return out

    def spark_options(self) -> dict[str, str]:
        """Options of Spark's Kafka source and sink (``kafka.bootstrap.servers`` and so on)."""
        return {f"kafka.{k}": v for k, v in self.java_properties().items()}

    def python_kwargs(self, client: type | None = None) -> dict[str, Any]:
        """kafka-python keyword arguments; ``client`` (KafkaProducer, KafkaConsumer,
        KafkaAdminClient) checks the free-form properties against what it accepts."""
        out: dict[str, Any] = {"bootstrap_servers": self.bootstrap}
        if self.security_protocol != "PLAINTEXT":
            out["security_protocol"] = self.security_protocol
        if self.sasl:
            out["sasl_mechanism"] = self.sasl_mechanism
            out["sasl_plain_username"] = self.username
            out["sasl_plain_password"] = self.password
        if self.tls:
            out["ssl_check_hostname"] = self.ssl_check_hostname
            if self.ssl_ca_file:
                out["ssl_cafile"] = str(self.ssl_ca_file)
            if self.ssl_cert_file:
                out["ssl_certfile"] = str(self.ssl_cert_file)
                out["ssl_keyfile"] = str(self.ssl_key_file or self.ssl_cert_file)
        known = getattr(client, "DEFAULT_CONFIG", None)
        for key, value in self.properties.items():
            name = key.replace(".", "_")
            if known is not None and name not in known:
                raise ConfigError(f"kafka.client.properties: {key!r} is not a setting of "
                                  f"kafka-python's {client.__name__} ({name})")  # type: ignore[union-attr]
            out[name] = _python_value(value)
        return out

    def librdkafka(self) -> dict[str, Any]:
        """confluent-kafka (librdkafka) configuration."""
        out: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.security_protocol != "PLAINTEXT":
            out["security.protocol"] = self.security_protocol
        if self.sasl:
            out["sasl.mechanism"] = self.sasl_mechanism
            out["sasl.username"] = self.username
            out["sasl.password"] = self.password
        if self.tls:
            if self.ssl_ca_file:
                out["ssl.ca.location"] = str(self.ssl_ca_file)
            if self.ssl_cert_file:
                out["ssl.certificate.location"] = str(self.ssl_cert_file)
                out["ssl.key.location"] = str(self.ssl_key_file or self.ssl_cert_file)
            out["ssl.endpoint.identification.algorithm"] = \
                "https" if self.ssl_check_hostname else "none"
        out.update(self.properties)
        return out


def refusal(client: ClientSettings, timeout_s: float = 10.0) -> str | None:
    """Why the cluster refuses this client's credentials or TLS handshake; None when it lets
    it in (or does not answer: that is for the caller's own timeout to say).

    librdkafka reports a refused SASL login or certificate at once, where kafka-python only
    retries its bootstrap until a timeout.
    """
    from confluent_kafka import KafkaError, KafkaException, Producer

    refused: list[str] = []

    def on_error(err: KafkaError) -> None:
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL):  # noqa: SLF001
            refused.append(err.str())

    producer = Producer({**client.librdkafka(), "error_cb": on_error, "logger": _PROBE_LOG,
                         "socket.timeout.ms": int(timeout_s * 1000)})
    deadline = time.monotonic() + timeout_s
    try:
        while not refused and time.monotonic() < deadline:
            try:
                producer.list_topics(timeout=0.5)
                return None
            except KafkaException:
                producer.poll(0)
        return refused[0] if refused else None
    finally:
        producer.flush(0)


def redact(options: Mapping[str, Any]) -> dict[str, Any]:
    """A copy fit for a log line: values of credential-like keys replaced."""
    return {k: REDACTED if SECRET_PROPERTY.search(k) else v for k, v in options.items()}


def _jaas_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _python_value(value: str) -> Any:
    """kafka-python wants ints and bools where the Java names take strings."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    try:
        return int(value)
    except ValueError:
        return value


def settings(cfg: Config) -> ClientSettings:
    """The connection settings every client of this config uses."""
    return settings_of(cfg.kafka, secure_dir(cfg))


def settings_of(kafka: KafkaConfig, secure: Path | None = None) -> ClientSettings:
    """``secure``: the secure broker's folder, whose credentials an unset security protocol
    takes when kafka.broker.secure (None: the explicit settings only)."""
    c = kafka.client
    protocol, mechanism, username, ca = (c.security_protocol, c.sasl_mechanism, c.username,
                                         c.ssl_ca_file)
    password_file = c.password_file
    if protocol is None and kafka.broker.secure and secure is not None:
        protocol, mechanism = "SASL_SSL", mechanism or SECURE_MECHANISM
        username, ca = username or SECURE_USER, ca or secure / CA_FILE
        if c.password is None and password_file is None:
            password_file = secure / CLIENT_PASSWORD_FILE
    password = c.password
    if password is None and password_file is not None:
        try:
            password = password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the Kafka password file {password_file} "
                              f"(KAFKA_SASL_PASSWORD_FILE): {exc.strerror or exc}") from exc
    return ClientSettings(
        bootstrap=kafka.bootstrap,
        security_protocol=protocol or "PLAINTEXT",
        sasl_mechanism=mechanism,
        username=username,
        password=password,
        ssl_ca_file=ca.resolve() if ca else None,
        ssl_cert_file=c.ssl_cert_file.resolve() if c.ssl_cert_file else None,
        ssl_key_file=c.ssl_key_file.resolve() if c.ssl_key_file else None,
        ssl_check_hostname=c.ssl_check_hostname,
        properties=dict(c.properties),
    )
