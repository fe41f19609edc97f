"""Where generated messages go: Kafka, a watched folder of JSON-lines files, or a TCP socket.

Every sink has ``send(msg)``, ``flush()`` and ``close()``; ``delivered`` counts what it handed
on (for Kafka: acknowledged by the broker at the last flush) and ``errors`` what it lost.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from generator.stream import Message

if TYPE_CHECKING:
    from jobs.kafka_client import ClientSettings

logger = logging.getLogger(__name__)


class Sink(Protocol):
    delivered: int
    errors: int

    def send(self, msg: Message) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class SinkError(RuntimeError):
    """A sink cannot be opened or lost messages; the message says why and what to check."""


# -- Kafka -------------------------------------------------------------------------------------


class KafkaSink:
    """kafka-python producer: acks=all, idempotent, lz4, large batches, key = sensor_id.

    The partition of each key is computed once (murmur2, like the Java client's default
    partitioner, so every client agrees) instead of for every message: kafka-python's pure
    Python murmur2 is one of the costliest steps of a send.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = 50,
        batch_size: int = 1 << 20,
        compression: str | None = "lz4",
        idempotent: bool = True,
        max_in_flight: int = 5,
        client: ClientSettings | None = None,
    ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError
        from kafka.partitioner.default import murmur2

        from jobs.kafka_client import ClientSettings

        self.topic = topic
        self.delivered = 0
        self.errors = 0
        self._sent = 0
        self._murmur2 = murmur2
        self._partition_of: dict[bytes, int] = {}
        try:
            self._producer = KafkaProducer(
                **(client or ClientSettings(bootstrap=bootstrap)).python_kwargs(KafkaProducer),
                acks="all",
                enable_idempotence=idempotent,
                linger_ms=linger_ms,
                batch_size=batch_size,
                compression_type=compression,
                max_in_flight_requests_per_connection=max_in_flight,
                retries=2_147_483_647 if idempotent else 5,
                request_timeout_ms=30_000,
                # ride out a broker restart of a few minutes: keep records and retry them
                # (reconnecting within 5 s of the broker's return) rather than expire them
                delivery_timeout_ms=600_000,
                reconnect_backoff_max_ms=5_000,
                client_id="lakehouse-generator",
            )
            parts = self._producer.partitions_for(topic)
        except KafkaError as exc:
            raise SinkError(
                f"cannot produce to {topic} on {bootstrap}: {exc!r}. Is the broker up? "
                "(lakehouse kafka start)"
            ) from exc
        if not parts:
            raise SinkError(f"topic {topic} has no partitions on {bootstrap}")
        self._partitions = len(parts)

    def _partition(self, key: bytes | None) -> int | None:
        if key is None:
            return None
        p = self._partition_of.get(key)
        if p is None:
            p = (self._murmur2(key) & 0x7FFFFFFF) % self._partitions
            self._partition_of[key] = p
        return p

    def send(self, msg: Message) -> None:
        self._producer.send(self.topic, value=msg.value, key=msg.key,
                            partition=self._partition(msg.key))
        self._sent += 1

    def flush(self) -> None:
        self._producer.flush()
        self.errors = self._error_count()
        self.delivered = self._sent - self.errors

    def _error_count(self) -> int:
        metrics = self._producer.metrics().get("producer-metrics", {})
        return int(metrics.get("record-error-total", 0) or 0)

    def close(self) -> None:
        self.flush()
        self._producer.close()
        if self.errors:
            logger.error("kafka: %d of %d messages were not delivered", self.errors, self._sent)


class ConfluentKafkaSink:
    """The same contract on librdkafka (confluent-kafka): acks=all, idempotent, lz4, big
    batches, partitions by murmur2 of the key like kafka-python and the Java client. Sending
    costs about a microsecond, so the generator itself becomes the limit (see README)."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        linger_ms: int = 50,
        batch_size: int = 1 << 20,
        compression: str | None = "lz4",
        idempotent: bool = True,
        client: ClientSettings | None = None,
    ) -> None:
        from confluent_kafka import KafkaException, Producer

        from jobs.kafka_client import ClientSettings

        self.topic = topic
        self.delivered = 0
        self.errors = 0
        self._sent = 0
        self._first_error: str | None = None
        conf = {
            **(client or ClientSettings(bootstrap=bootstrap)).librdkafka(),
            "client.id": "lakehouse-generator",
            "acks": "all",
            "enable.idempotence": idempotent,
            "compression.type": compression or "none",
            "linger.ms": linger_ms,
            "batch.size": batch_size,
            "batch.num.messages": 100_000,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1 << 20,
            "partitioner": "murmur2_random",
            "message.timeout.ms": 600_000,      # ride out a broker restart of a few minutes
            "reconnect.backoff.max.ms": 5_000,
        }
        self._producer = Producer(conf)
        try:
            meta = self._producer.list_topics(topic, timeout=15)
        except KafkaException as exc:
            raise SinkError(
                f"cannot produce to {topic} on {bootstrap}: {exc}. Is the broker up? "
                "(lakehouse kafka start)"
            ) from exc
        tmeta = meta.topics.get(topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            raise SinkError(f"topic {topic} is not available on {bootstrap}")

    def _on_delivery(self, err: object, _msg: object) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors += 1
            self._first_error = self._first_error or str(err)

    def send(self, msg: Message) -> None:
        while True:
            try:
                self._producer.produce(self.topic, msg.value, msg.key,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:
                # the local queue is full: let librdkafka send and serve delivery reports
                self._producer.poll(0.05)
        self._sent += 1
        if self._sent % 10_000 == 0:
            self._producer.poll(0)

    def flush(self) -> None:
        while self._producer.flush(1.0) > 0:
            logger.info("kafka: waiting for %d messages to be acknowledged", len(self._producer))

    def close(self) -> None:
        self.flush()
        if self.errors:
            logger.error("kafka: %d of %d messages were not delivered (first error: %s)",
                         self.errors, self._sent, self._first_error)


# -- files -------------------------------------------------------------------------------------


class FileSink:
    """JSON lines into ``out_dir``: each file is written under a hidden temporary name and then
    renamed into place (atomic on one file system), so a watching reader (Spark's file source
    ignores names starting with "." ) never sees a partial file. A file is closed every
    ``roll_messages`` messages or ``roll_seconds`` of wall time, whichever comes first."""

    def __init__(
        self, out_dir: Path | str, *, roll_messages: int = 50_000, roll_seconds: float = 1.0,
        prefix: str | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.roll_messages = roll_messages
        self.roll_seconds = roll_seconds
        self.prefix = prefix or f"part-{int(time.time() * 1000)}-{os.getpid()}"
        self.delivered = 0
        self.errors = 0
        self.files: list[Path] = []
        self._seq = 0
        self._lines: list[bytes] = []
        self._opened = time.monotonic()

    def send(self, msg: Message) -> None:
        if b"\n" in msg.value:
            raise SinkError("a message for the file sink must not contain a newline")
        self._lines.append(msg.value)
        if len(self._lines) >= self.roll_messages or (
            time.monotonic() - self._opened >= self.roll_seconds
        ):
            self.flush()

    def flush(self) -> None:
        self._opened = time.monotonic()
        if not self._lines:
            return
        self._seq += 1
        name = f"{self.prefix}-{self._seq:06d}.jsonl"
        tmp = self.out_dir / f".{name}.tmp"
        with tmp.open("wb") as fh:
            fh.write(b"\n".join(self._lines) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        final = self.out_dir / name
        tmp.replace(final)
        self.files.append(final)
        self.delivered += len(self._lines)
        self._lines = []

    def close(self) -> None:
        self.flush()


# -- socket ------------------------------------------------------------------------------------


class SocketSink:
    """A TCP server streaming one message per line to every connected client (like
    ``nc -lk PORT``). Sending waits until at least one client is connected; a client that goes
    away is dropped and the stream goes on to the others (or waits for the next one)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9999, *, batch: int = 256) -> None:
        self.delivered = 0
        self.errors = 0
        self._batch = batch
        self._buf: list[bytes] = []
        self._clients: list[socket.socket] = []
        self._cond = threading.Condition()
        self._closed = False
        self._server = socket.create_server((host, port), reuse_port=False)
        self._server.settimeout(0.2)
        self.address = self._server.getsockname()[:2]
        self._acceptor = threading.Thread(target=self._accept, name="socket-sink", daemon=True)
        self._acceptor.start()
        logger.info("socket sink listening on %s:%d", *self.address)

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, peer = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._cond:
                self._clients.append(conn)
                self._cond.notify_all()
            logger.info("socket sink: client %s:%d connected", *peer[:2])

    def wait_for_client(self, timeout_s: float | None = None) -> bool:
        with self._cond:
            if not self._clients:
                logger.info("socket sink: waiting for a client on %s:%d", *self.address)
            return self._cond.wait_for(lambda: bool(self._clients), timeout=timeout_s)

    def send(self, msg: Message) -> None:
        self._buf.append(msg.value)
        if len(self._buf) >= self._batch:
            self.flush()

    def flush(self) -> None:
        if not self._buf:
            return
        data = b"\n".join(self._buf) + b"\n"
        count = len(self._buf)
        self._buf = []
        while True:
            self.wait_for_client()
            with self._cond:
                clients = list(self._clients)
            sent_any = False
            for conn in clients:
                try:
                    conn.sendall(data)
                    sent_any = True
                except OSError:
                    logger.info("socket sink: a client went away")
                    with self._cond:
                        self._clients.remove(conn)
                    conn.close()
            if sent_any:
                self.delivered += count
                return

    def close(self) -> None:
        self.flush()
        self._closed = True
        with self._cond:
            for conn in self._clients:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._clients.clear()
        self._server.close()
        self._acceptor.join(timeout=2)
