"""The real Apache Kafka broker (KRaft, single node) as a service the project starts itself.

The broker runs from the jars Maven resolved into ``.deps/broker``. Its storage is formatted
on first start under ``<data_dir>/kafka``; it logs to ``<data_dir>/logs/kafka``; its pid is
kept in ``<data_dir>/run/kafka.pid``.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template

from jobs import jvm_archive
from jobs.config import REPO_ROOT, Config

logger = logging.getLogger(__name__)

SERVER_TEMPLATE = REPO_ROOT / "conf" / "kafka" / "server.properties"
LOG4J_CONFIG = REPO_ROOT / "conf" / "kafka" / "log4j2.properties"


class BrokerError(RuntimeError):
    """The broker could not be started, reached or stopped; the message says why and what to do."""


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


def free_port_pair(host: str = "127.0.0.1") -> int:
    """A port p such that p and p+1 (the controller) are both free on ``host``."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port < 65535 and not port_open(host, port + 1, 0.1):
            return port
    raise BrokerError(f"no free pair of ports on {host}")


def broker_answers(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """True when a Kafka metadata request succeeds (not merely a TCP connect)."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            request_timeout_ms=int(timeout_s * 1000),
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.list_topics()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def write_server_properties(cfg: Config) -> Path:
    storage = cfg.paths.kafka_storage.resolve()
    text = Template(SERVER_TEMPLATE.read_text()).substitute(
        host=cfg.kafka.host,
        port=cfg.kafka.port,
        controller_port=cfg.kafka.controller_port,
        log_dirs=storage / "data",
    )
    path = storage / "server.properties"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
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
    """Format KRaft storage once; a formatted folder (meta.properties) is left as it is."""
    if (cfg.paths.kafka_storage / "data" / "meta.properties").exists():
        return
    logger.info("formatting Kafka storage under %s", cfg.paths.kafka_storage)
    cmd = java_command(cfg, "kafka.tools.StorageTool", "format", "-t", _cluster_id(),
                       "-c", str(props))
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}")


def start(cfg: Config, *, jvm_options: Sequence[str] = ()) -> BrokerStatus:
    """Start the broker unless it already runs; return once it answers metadata requests."""
    current = status(cfg)
    if current.running:
        if not current.reachable:
            _wait_until_up(cfg, current.pid)
        logger.info("Kafka already running (pid %s) on %s", current.pid, cfg.kafka.bootstrap)
        return status(cfg)
    if port_open(cfg.kafka.host, cfg.kafka.port) or port_open(
        cfg.kafka.host, cfg.kafka.controller_port
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
    logger.info("Kafka starting (pid %s) on %s, logs in %s", proc.pid, cfg.kafka.bootstrap, log_dir)
    _wait_until_up(cfg, proc.pid, proc)
    logger.info("Kafka up on %s", cfg.kafka.bootstrap)
    return status(cfg)


def _wait_until_up(cfg: Config, pid: int | None, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + cfg.kafka.broker.start_timeout_s
    while time.monotonic() < deadline:
        exited = proc.poll() is not None if proc is not None else not (pid and _alive(pid))
        if exited:
            _pid_file(cfg).unlink(missing_ok=True)
            raise BrokerError(f"Kafka exited during start-up; last log lines:\n{_tail(cfg)}")
        if port_open(cfg.kafka.host, cfg.kafka.port) and broker_answers(cfg.kafka.bootstrap, 3):
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
    reachable = port_open(cfg.kafka.host, cfg.kafka.port) and broker_answers(cfg.kafka.bootstrap, 3)
    return BrokerStatus(pid=pid, running=pid is not None, reachable=reachable,
                        bootstrap=cfg.kafka.bootstrap)
