"""The real Apache Kafka broker (KRaft, single node) as a service the project starts itself.

The broker runs from the jars Maven resolved into ``.deps/broker``. Its storage is formatted
on first start under ``<data_dir>/kafka``; it logs to ``<data_dir>/logs/kafka``; its pid is
kept in ``<data_dir>/run/kafka.pid``. The client listener binds kafka.broker.bind_address
(127.0.0.1 unless set otherwise) and the KRaft controller 127.0.0.1.

Secure (kafka.broker.secure, ``kafka start --secure``): the client listener is SASL_SSL with
SCRAM-SHA-512. A self-signed certificate (Java keytool) and the SCRAM credentials, created
when the storage is formatted, live under ``<data_dir>/kafka/secure`` (owner only).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from jobs import jvm_archive, kafka_client
from jobs.config import REPO_ROOT, Config
from jobs.kafka_client import ClientSettings

logger = logging.getLogger(__name__)

SERVER_TEMPLATE = REPO_ROOT / "conf" / "kafka" / "server.properties"
SECURE_TEMPLATE = REPO_ROOT / "conf" / "kafka" / "server-secure.properties"
BROKER_USER = "lakehouse-broker"
SCRAM_MARKER = "scram-users"
LOG4J_CONFIG = REPO_ROOT / "conf" / "kafka" / "log4j2.properties"


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped; the message says why and what to do."""


class BrokerAuthError(BrokerError):
    """The broker answers but refuses this client's credentials or TLS handshake."""


@dataclass(frozen=True)
class BrokerStatus:
    pid: int | None
    running: bool
    reachable: bool
    bootstrap: str

    def describe(self) -> str:
        if self.running and self.reachable:
            return f"kafka: up (pid {self.pid}) on {self.bootstrap}"
        if self.running:
            return f"kafka: process {self.pid} alive but {self.bootstrap} not answering"
        if self.reachable:
            return f"kafka: {self.bootstrap} answers, but not a broker this project started"
        return f"kafka: down ({self.bootstrap})"


def _pid_file(cfg: Config) -> Path:
    return cfg.paths.run / "kafka.pid"


def _log_dir(cfg: Config) -> Path:
    return cfg.paths.logs / "kafka"


def _classpath(cfg: Config) -> str:
    jars = sorted((cfg.paths.deps_dir / "broker").glob("*.jar"))
    if not any(j.name.startswith("kafka_2.13-") for j in jars):
        raise BrokerError(
            f"Kafka broker jars not found in {cfg.paths.deps_dir / 'broker'}: run scripts/setup.sh"
        )
    return os.pathsep.join(str(j) for j in jars)


def _read_pid(cfg: Config) -> int | None:
    try:
        pid = int(_pid_file(cfg).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own exited child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited child not yet reaped) still answers kill(0).
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, IndexError):
        return True
    return state != "Z"


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _ephemeral_low() -> int:
    """The lowest port the kernel gives outgoing connections (Linux default 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port p such that p and p+1 (the controller) can both be bound on ``host`` now.

    Chosen below the kernel's ephemeral range where there is room: a port handed out by
    ``bind(0)`` comes from the same range as outgoing connections, so any client (Spark, a
    Kafka producer) could take p+1 between this check and the broker's bind, which CI saw as
    "Address already in use" at the controller's start.
    """
    low = _ephemeral_low()
    span = (max(1024, low - 16384), low - 2) if low - 2 > 4096 else None
    rng = random.SystemRandom()
    for _ in range(200):
        if span is not None:
            port = rng.randint(*span)
        else:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        if port < 65535 and _bindable(host, port) and _bindable(host, port + 1):
            return port
    raise BrokerError(f"no free pair of ports on {host}")


def broker_answers(client: ClientSettings | str, timeout_s: float = 5.0) -> bool:
    """True when a Kafka metadata request succeeds (not merely a TCP connect).

    Raises BrokerAuthError when the broker refuses the client's credentials: waiting longer
    would not help.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    if isinstance(client, str):
        client = ClientSettings(bootstrap=client)
    try:
        admin = KafkaAdminClient(
            **client.python_kwargs(KafkaAdminClient),
            request_timeout_ms=int(timeout_s * 1000),
            # kafka-python waits 30 s to bootstrap by default, e.g. a PLAINTEXT client at a
            # SASL_SSL port: a health check answers within its own timeout instead.
            bootstrap_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError, ValueError) as exc:
        _raise_if_refused(client, exc)
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError) as exc:
        _raise_if_refused(client, exc)
        return False
    finally:
        admin.close()


def _raise_if_refused(client: ClientSettings, exc: BaseException) -> None:
    """A refusal of credentials or of TLS as BrokerAuthError, in one line."""
    from kafka.errors import SaslAuthenticationFailedError

    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 5:
        chain.append(e)
        e = e.__cause__ or e.__context__
    reason = next((str(e) for e in chain if isinstance(e, SaslAuthenticationFailedError)),
                  None)
    if reason is None and client.security_protocol != "PLAINTEXT":
        reason = kafka_client.refusal(client, 5.0)
    if reason is not None:
        raise BrokerAuthError(refused_message(client, reason)) from exc


def refused_message(client: ClientSettings, reason: str) -> str:
    """One line: who was refused where, why, and which settings to fix."""
    if "SSL" in reason or "certificate" in reason.lower():
        return (f"TLS to Kafka at {client.describe()} failed: {reason}. Fix: "
                "kafka.client.ssl_ca_file (the brokers' CA certificate) or kafka.bootstrap's "
                "host name")
    return (f"Kafka at {client.describe()} refused the credentials: {reason}. Fix: the "
            "password (KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE), kafka.client.username "
            "and kafka.client.sasl_mechanism")


def check_access(client: ClientSettings, timeout_s: float = 10.0) -> None:
    """Raise BrokerAuthError at once when the cluster refuses a secured client (PLAINTEXT:
    nothing to check, nothing done)."""
    if client.security_protocol == "PLAINTEXT":
        return
    reason = kafka_client.refusal(client, timeout_s)
    if reason is not None:
        raise BrokerAuthError(refused_message(client, reason))


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def bind_warning(cfg: Config) -> str | None:
    """What `kafka start` says when the client listener is not on loopback."""
    bind = ipaddress.ip_address(cfg.kafka.broker.bind_address)
    if bind.is_loopback:
        return None
    auth = "SASL_SSL, SCRAM-SHA-512" if cfg.kafka.broker.secure else \
        "PLAINTEXT: no authentication, no encryption"
    return (f"kafka.broker.bind_address is {bind}: the broker accepts connections from the "
            f"network on port {cfg.kafka.port} ({auth})")


def _check_bind(cfg: Config) -> None:
    """A loopback listener advertised under a network name would never answer its clients."""
    if not ipaddress.ip_address(cfg.kafka.broker.bind_address).is_loopback:
        return
    try:
        infos = socket.getaddrinfo(cfg.kafka.host, cfg.kafka.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BrokerError(f"kafka.bootstrap host {cfg.kafka.host!r} does not resolve: "
                          f"{exc.strerror or exc}") from exc
    addresses = {info[4][0] for info in infos}
    if not any(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise BrokerError(
            f"kafka.bootstrap names {cfg.kafka.host} ({', '.join(sorted(addresses))}), but the "
            f"broker binds {cfg.kafka.broker.bind_address} (kafka.broker.bind_address). To "
            "serve the network set --set kafka.broker.bind_address=ADDRESS explicitly; for "
            f"this machine only use kafka.bootstrap=127.0.0.1:{cfg.kafka.port}")


def _secret_file(path: Path, value: str | None = None) -> str:
    """The secret in ``path``, written (owner-only) with ``value`` or a fresh one if absent."""
    if path.exists() and value is None:
        return path.read_text().strip()
    value = value or secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def ensure_certificate(cfg: Config) -> Path:
    """The broker's TLS keystore, a self-signed certificate made once with keytool.

    Its names: the bootstrap host, the bind address, 127.0.0.1 and localhost. Returns the CA
    file clients trust (the certificate itself, PEM).
    """
    folder = kafka_client.secure_dir(cfg).resolve()
    keystore, ca = folder / "broker.p12", folder / kafka_client.CA_FILE
    if keystore.exists() and ca.exists():
        return ca
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    password_file = folder / "keystore.password"
    _secret_file(password_file)
    names = {"ip:127.0.0.1", "dns:localhost"}
    for host in (cfg.kafka.host, cfg.kafka.broker.bind_address):
        try:
            addr = ipaddress.ip_address(host)
        except ValueError:
            names.add(f"dns:{host}")
            continue
        if not addr.is_unspecified:
            names.add(f"ip:{addr}")
    keystore.unlink(missing_ok=True)
    pass_opts = ["-storepass:file", str(password_file)]
    steps = [
        ["keytool", "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
         "-validity", "3650", "-dname", "CN=lakehouse-kafka", "-ext",
         "SAN=" + ",".join(sorted(names)), "-keystore", str(keystore), "-storetype", "PKCS12",
         *pass_opts, "-keypass:file", str(password_file)],
        ["keytool", "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(keystore),
         "-storetype", "PKCS12", *pass_opts, "-file", str(ca)],
    ]
    for cmd in steps:
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except FileNotFoundError as exc:
            raise BrokerError("keytool not found: the secure broker needs the JDK's keytool "
                              "on PATH") from exc
        if result.returncode != 0:
            raise BrokerError(f"keytool failed ({' '.join(cmd[:2])}): "
                              f"{(result.stdout + result.stderr).strip()}")
    os.chmod(keystore, 0o600)
    logger.info("TLS certificate for %s generated: %s (clients trust this file)",
                ", ".join(sorted(names)), ca)
    return ca


def client_password(cfg: Config) -> tuple[str, Path | None]:
    """The SCRAM password of the client user: from the environment (KAFKA_SASL_PASSWORD,
    KAFKA_SASL_PASSWORD_FILE), else one generated once into the secure folder (its path)."""
    c = cfg.kafka.client
    if c.password:
        return c.password, None
    if c.password_file:
        return kafka_client.settings(cfg).password or "", c.password_file
    path = kafka_client.secure_dir(cfg) / kafka_client.CLIENT_PASSWORD_FILE
    existed = path.exists()
    password = _secret_file(path)
    if not existed:
        logger.warning("no KAFKA_SASL_PASSWORD given: generated the password of Kafka user %s "
                       "into %s (owner-only); clients elsewhere: "
                       "KAFKA_SASL_PASSWORD_FILE=%s", _client_user(cfg), path.resolve(),
                       path.resolve())
    return password, path


def _client_user(cfg: Config) -> str:
    return cfg.kafka.client.username or kafka_client.SECURE_USER


def write_server_properties(cfg: Config) -> Path:
    storage = cfg.paths.kafka_storage.resolve()
    secure = cfg.kafka.broker.secure
    text = Template(SERVER_TEMPLATE.read_text()).substitute(
        listener="SASL_SSL" if secure else "PLAINTEXT",
        bind=_url_host(cfg.kafka.broker.bind_address),
        advertised_host=_url_host(cfg.kafka.host),
        port=cfg.kafka.port,
        controller_port=cfg.kafka.controller_port,
        log_dirs=storage / "data",
    )
    path = storage / "server.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    if secure:
        folder = kafka_client.secure_dir(cfg).resolve()
        ca = ensure_certificate(cfg)
        text += "\n" + Template(SECURE_TEMPLATE.read_text()).substitute(
            broker_user=BROKER_USER,
            broker_password=_secret_file(folder / "broker-user.password"),
            keystore=folder / "broker.p12",
            keystore_password=_secret_file(folder / "keystore.password"),
            ca_file=ca,
        )
    # It holds the keystore and inter-broker passwords when secure: owner only.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


def java_command(cfg: Config, main: str, *args: str, heap: str = "256m",
                 jvm_options: Sequence[str] = ("-XX:+UseG1GC",)) -> list[str]:
    """A java command line for a Kafka tool's ``main`` class on the broker's classpath.

    The broker's class archive (`jobs.jvm_archive`) is mapped when set-up built one.
    """
    return [
        "java",
        f"-Xmx{heap}",
        f"-Xms{heap}",
        *jvm_archive.java_options(cfg, jvm_archive.KAFKA_BROKER),
        *jvm_options,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={_log_dir(cfg).resolve()}",
        "-cp",
        _classpath(cfg),
        main,
        *args,
    ]


def _cluster_id() -> str:
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka's own generator avoids ids that look like flags
            return cid


def format_storage(cfg: Config, props: Path) -> None:
    """Format KRaft storage once; a formatted folder (meta.properties) is left as it is.

    Secure: the SCRAM-SHA-512 credentials of the client user and the broker's own user are
    created here (KRaft keeps them in its metadata log from the first record on).
    """
    marker = kafka_client.secure_dir(cfg) / SCRAM_MARKER
    if (cfg.paths.kafka_storage / "data" / "meta.properties").exists():
        if cfg.kafka.broker.secure and not marker.exists():
            raise BrokerError(
                f"the Kafka storage under {cfg.paths.kafka_storage} was formatted without "
                "SCRAM credentials (a broker started without --secure). Fix: stop it, move "
                f"{cfg.paths.kafka_storage} aside (its topics go with it) and start with "
                "--secure again")
        return
    logger.info("formatting Kafka storage under %s", cfg.paths.kafka_storage)
    args = ["format", "-t", _cluster_id(), "-c", str(props)]
    if cfg.kafka.broker.secure:
        password, _ = client_password(cfg)
        broker_password = _secret_file(kafka_client.secure_dir(cfg) / "broker-user.password")
        for user, secret in ((_client_user(cfg), password), (BROKER_USER, broker_password)):
            if any(ch in secret for ch in '"\\') or any(ch in user for ch in '"=,[]'):
                raise BrokerError(f"the SCRAM user {user!r} or its password holds a quote, "
                                  "backslash or bracket, which `kafka-storage format "
                                  "--add-scram` cannot take; choose another")
            args += ["--add-scram", f'{kafka_client.SECURE_MECHANISM}=[name={user},'
                                    f'password="{secret}"]']
    cmd = java_command(cfg, "kafka.tools.StorageTool", *args)
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        out = result.stdout + result.stderr
        if cfg.kafka.broker.secure:
            out = out.replace(password, kafka_client.REDACTED)
        raise BrokerError(f"formatting Kafka storage failed:\n{out}")
    if cfg.kafka.broker.secure:
        _secret_file(marker, f"{_client_user(cfg)} {BROKER_USER}")
        logger.info("SCRAM-SHA-512 credentials created for Kafka users %s and %s",
                    _client_user(cfg), BROKER_USER)


def start(cfg: Config, *, jvm_options: Sequence[str] = ()) -> BrokerStatus:
    """Start the broker unless it already runs; return once it answers metadata requests."""
    current = status(cfg)
    if current.running:
        if not current.reachable:
            _wait_until_up(cfg, current.pid)
        logger.info("Kafka already running (pid %s) on %s", current.pid, cfg.kafka.bootstrap)
        return status(cfg)
    _check_bind(cfg)
    warning = bind_warning(cfg)
    if warning:
        logger.warning("%s; an explicit setting", warning)
    if port_open(cfg.kafka.host, cfg.kafka.port) or port_open(
        "127.0.0.1", cfg.kafka.controller_port
    ):
        raise BrokerError(
            f"{cfg.kafka.host}:{cfg.kafka.port} (or controller port {cfg.kafka.controller_port}) "
            "is taken by another process; stop it or set KAFKA_BOOTSTRAP to a free port"
        )
    props = write_server_properties(cfg)
    format_storage(cfg, props)
    log_dir = _log_dir(cfg)
    log_dir.mkdir(parents=True, exist_ok=True)
    cfg.paths.run.mkdir(parents=True, exist_ok=True)
    out = (log_dir / "kafka.out").open("ab")
    cmd = java_command(cfg, "kafka.Kafka", str(props), heap=cfg.kafka.broker.heap,
                       jvm_options=[*cfg.kafka.broker.jvm_options, *jvm_options])
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    out.close()
    _pid_file(cfg).write_text(str(proc.pid))
    logger.info("Kafka starting (pid %s) on %s (bound to %s), logs in %s", proc.pid,
                cfg.kafka.bootstrap, cfg.kafka.broker.bind_address, log_dir)
    _wait_until_up(cfg, proc.pid, proc)
    logger.info("Kafka up on %s", kafka_client.settings(cfg).describe())
    return status(cfg)


def _wait_until_up(cfg: Config, pid: int | None, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + cfg.kafka.broker.start_timeout_s
    client = kafka_client.settings(cfg)
    while time.monotonic() < deadline:
        exited = proc.poll() is not None if proc is not None else not (pid and _alive(pid))
        if exited:
            _pid_file(cfg).unlink(missing_ok=True)
            raise BrokerError(f"Kafka exited during start-up; last log lines:\n{_tail(cfg)}")
        if port_open(cfg.kafka.host, cfg.kafka.port) and broker_answers(client, 3):
            return
        time.sleep(0.5)
    raise BrokerError(
        f"Kafka did not answer on {cfg.kafka.bootstrap} within "
        f"{cfg.kafka.broker.start_timeout_s:.0f}s; last log lines:\n{_tail(cfg)}"
    )


def _tail(cfg: Config, lines: int = 30) -> str:
    chunks = []
    for name in ("kafka.out", "server.log"):
        path = _log_dir(cfg) / name
        if path.exists():
            chunks.extend(path.read_text(errors="replace").splitlines()[-lines:])
    return "\n".join(chunks[-lines:]) or "(no log output)"


def stop(cfg: Config, *, hard: bool = False) -> bool:
    """SIGTERM the broker and wait for a clean shutdown; SIGKILL only after the timeout.

    ``hard`` SIGKILLs it at once, as a crash or power cut would (the reliability harness).
    """
    pid = _read_pid(cfg)
    if pid is None:
        _pid_file(cfg).unlink(missing_ok=True)
        logger.info("Kafka is not running")
        return False
    logger.info("%s Kafka (pid %s)", "killing" if hard else "stopping", pid)
    os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
    deadline = time.monotonic() + cfg.kafka.broker.stop_timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        logger.warning("Kafka did not stop within %.0fs; killing it",
                       cfg.kafka.broker.stop_timeout_s)
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    _pid_file(cfg).unlink(missing_ok=True)
    logger.info("Kafka stopped")
    return True


def status(cfg: Config) -> BrokerStatus:
    pid = _read_pid(cfg)
    reachable = port_open(cfg.kafka.host, cfg.kafka.port) and broker_answers(
        kafka_client.settings(cfg), 3)
    return BrokerStatus(pid=pid, running=pid is not None, reachable=reachable,
                        bootstrap=cfg.kafka.bootstrap)
