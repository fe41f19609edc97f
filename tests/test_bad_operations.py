"""Bad operations (issue #8, item 4): each ends `lakehouse run` with one message naming the fix
and a non-zero exit, mostly before Spark starts; a deleted checkpoint reads nothing twice.

The CLI runs as a subprocess (`python -m jobs.cli`), as a user runs it. The real checkpoints
it is given are made by the real pipeline on the suite's broker and shared SparkSession; then
they are damaged the ways a disk, a bad copy or a hand edit damages them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from checkpoints import forget_last_commit
from kafka import KafkaProducer

from jobs import broker, preflight, runner
from jobs.config import REPO_ROOT, Config
from jobs.duck import connect
from jobs.status import end_offsets
from jobs.tables import BRONZE_RAW, QUARANTINE, SILVER_READINGS
from jobs.topics import create_topics

pytestmark = pytest.mark.timeout(300)

GOOD, BAD = 10, 2


def lakehouse(cfg: Config, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`lakehouse --set ... <args>` on the paths, broker and topic of ``cfg``; small Spark."""
    sets = {
        "paths.data_dir": cfg.paths.data_dir,
        "paths.lakehouse_root": cfg.paths.lakehouse,
        "paths.checkpoint_root": cfg.paths.checkpoints,
        "paths.deps_dir": cfg.paths.deps_dir,
        "kafka.bootstrap": cfg.kafka.bootstrap,
        "kafka.topic_in": cfg.kafka.topic_in,
        "spark.master": "local[2]",
        "spark.shuffle_partitions": 2,
        "spark.ui_enabled": "false",
        "spark.driver_memory": "1g",
    }
    argv = [sys.executable, "-m", "jobs.cli"]
    for key, value in sets.items():
        argv += ["--set", f"{key}={value}"]
    return subprocess.run([*argv, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=timeout, check=False)


def assert_refused(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Non-zero exit; the last stderr line block is our one message, with no Python trace."""
    assert result.returncode != 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr[result.stderr.rindex("Error: "):]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    return message


def _reading(i: int) -> bytes:
    return json.dumps({"sensor_id": f"S{i % 3}", "timestamp": f"2024-01-10T12:{i:02d}:00Z",
                       "temperature": 20.0 + i, "humidity": 50.0, "pressure": 1000.0,
                       "location": "Lab"}).encode()


def _produce(cfg: Config, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all")
    for i, value in enumerate(values):
        producer.send(cfg.kafka.topic_in, value=value, partition=i % 2)
    producer.flush()
    producer.close()


@pytest.fixture(scope="module")
def lake(kafka_cfg: Config, spark, tmp_path_factory: pytest.TempPathFactory) -> Config:  # noqa: ANN001
    """Bronze, then silver as a query of its own (both checkpoints), run by the real
    pipeline: several batches each, 2 quarantined."""
    root = tmp_path_factory.mktemp("bad-ops")
    cfg = kafka_cfg.with_overrides({
        "paths.data_dir": str(root / "data"),
        "kafka.topic_in": f"bad-ops-{uuid.uuid4().hex[:8]}",
        "streaming.max_offsets_per_trigger": 6,
        "streaming.metrics_flush_s": 60,
    })
    create_topics(cfg, {cfg.kafka.topic_in: 2})
    _produce(cfg, [_reading(i) for i in range(GOOD)] + [b"{not json", b"[1, 2"])
    assert runner.run_once(spark, cfg, ["bronze"]) == {"bronze": GOOD + BAD}
    assert runner.run_once(spark, cfg, ["silver"]) == {"silver": GOOD + BAD}
    return cfg


def _copy_lake(lake: Config, dest: Path, *, checkpoints: tuple[str, ...] = ()) -> Config:
    """The lake's tables (and the named checkpoints) in a folder of their own."""
    shutil.copytree(lake.paths.lakehouse, dest / "lakehouse",
                    ignore=shutil.ignore_patterns("_checkpoints"))
    (dest / "checkpoints").mkdir()
    for name in checkpoints:
        shutil.copytree(lake.paths.checkpoint(name), dest / "checkpoints" / name)
    return lake.with_overrides({"paths.data_dir": str(dest / "data"),
                                "paths.lakehouse_root": str(dest / "lakehouse"),
                                "paths.checkpoint_root": str(dest / "checkpoints")})


def _count(path: Path) -> int:
    return connect().execute(f"SELECT count(*) FROM delta_scan('{path}')").fetchone()[0]


# --- before Spark: folders, jars, broker -----------------------------------------------------


def _make_read_only(folder: Path) -> Callable[[], None]:
    """Make ``folder`` unwritable even for root; return the undo (or skip if impossible)."""
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        return lambda: folder.chmod(0o755)
    (folder / "probe").unlink()  # root ignores modes: an immutable folder stops it too
    chattr = shutil.which("chattr")
    if chattr and subprocess.run([chattr, "+i", str(folder)], capture_output=True,
                                 check=False).returncode == 0:
        return lambda: (subprocess.run([chattr, "-i", str(folder)], check=True),
                        folder.chmod(0o755))
    folder.chmod(0o755)
    pytest.skip("cannot make a folder unwritable here (root without chattr)")


@pytest.mark.parametrize("kind", ["read-only folder", "path through a file"])
def test_unwritable_data_folder(base_cfg: Config, tmp_path: Path, kind: str) -> None:
    undo = lambda: None  # noqa: E731
    if kind == "read-only folder":
        data = tmp_path / "ro" / "data"
        data.parent.mkdir()
        undo = _make_read_only(data.parent)
    else:
        (tmp_path / "file").write_text("not a folder")
        data = tmp_path / "file" / "data"
    cfg = base_cfg.with_overrides({"paths.data_dir": str(data), "paths.lakehouse_root": None,
                                   "paths.checkpoint_root": None})
    try:
        result = lakehouse(cfg, "run", "--once", timeout=60)
    finally:
        undo()
    assert_refused(result, f"cannot write to the data folder {data}", "--set paths.data_dir=")


def test_missing_jars(base_cfg: Config, tmp_path: Path) -> None:
    cfg = base_cfg.with_overrides({"paths.data_dir": str(tmp_path / "data"),
                                   "paths.deps_dir": str(tmp_path / "no-deps")})
    assert_refused(lakehouse(cfg, "run", "--once", timeout=60),
                   "Spark connector jars missing", "spark-sql-kafka-0-10_2.13", "delta-spark",
                   "run scripts/setup.sh")


def test_unreachable_broker(base_cfg: Config, tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{broker.free_port_pair()}"
    cfg = base_cfg.with_overrides({"paths.data_dir": str(tmp_path / "data"),
                                   "kafka.bootstrap": nobody})
    assert_refused(lakehouse(cfg, "run", "--once", timeout=60),
                   f"Kafka broker not reachable at {nobody}", "bronze reads topic",
                   "`lakehouse kafka start`", "--set kafka.bootstrap=")
    # Silver reads Delta only: it does not need the broker.
    assert preflight.broker_needs(cfg, ["silver"]) == []


def test_wait_for_broker_waits_for_the_topics(kafka_cfg: Config, tmp_path: Path) -> None:
    """`lakehouse run --wait-for-broker` (start_all starts Spark and the broker at once)."""
    topic = f"late-{uuid.uuid4().hex[:8]}"
    cfg = kafka_cfg.with_overrides({"paths.data_dir": str(tmp_path / "data"),
                                    "kafka.topic_in": topic})
    later = threading.Timer(3.0, create_topics, args=(cfg, {topic: 2}))
    t0 = time.monotonic()
    later.start()
    try:
        ready = preflight.await_broker(cfg, ["bronze"], 60)
    finally:
        later.join()
    assert time.monotonic() - t0 >= 3.0  # it waited for the topic, not only for the broker
    assert ready.kafka.topic_in == topic

    nobody = cfg.with_overrides({"kafka.bootstrap": f"127.0.0.1:{broker.free_port_pair()}"})
    with pytest.raises(preflight.PreflightError,
                       match="Kafka not ready after waiting 2 s: Kafka broker not reachable"):
        preflight.await_broker(nobody, ["bronze"], 2)


# --- damaged checkpoints -----------------------------------------------------------------------


def test_real_and_crashed_checkpoints_pass(lake: Config, tmp_path: Path) -> None:
    copy = _copy_lake(lake, tmp_path, checkpoints=("bronze", "silver"))
    assert len(preflight._batches(copy.paths.checkpoint("bronze") / "offsets")) >= 2
    for name in ("bronze", "silver"):
        assert preflight.checkpoint_problem(copy.paths.checkpoint(name)) is None
        forget_last_commit(copy.paths.checkpoint(name))  # killed before its last commit
        assert preflight.checkpoint_problem(copy.paths.checkpoint(name)) is None


def _latest(folder: Path) -> Path:
    return folder / str(max(preflight._batches(folder)))


def _garbage(ckpt: Path) -> str:
    _latest(ckpt / "offsets").write_bytes(b"\x13\x37 not an offsets file")
    return f"offsets/{_latest(ckpt / 'offsets').name} is empty or does not start with"


def _truncated(ckpt: Path) -> str:
    entry = _latest(ckpt / "offsets")
    entry.write_bytes(entry.read_bytes()[: -12])
    return f"offsets/{entry.name} holds a line that is not JSON"


def _empty_metadata(ckpt: Path) -> str:
    (ckpt / "metadata").write_text("")
    return "metadata (the query id) is empty or not valid JSON"


def _no_commits(ckpt: Path) -> str:
    shutil.rmtree(ckpt / "commits")
    return "commits/ is missing or empty but offsets/ reaches batch"


@pytest.mark.parametrize("damage", [_garbage, _truncated, _empty_metadata, _no_commits],
                         ids=lambda f: f.__name__.strip("_"))
def test_damaged_checkpoint(lake: Config, tmp_path: Path, damage: Callable[[Path], str]) -> None:
    copy = _copy_lake(lake, tmp_path, checkpoints=("bronze",))
    ckpt = copy.paths.checkpoint("bronze")
    problem = damage(ckpt)
    assert_refused(lakehouse(copy, "run", "--once", "--layers", "bronze", timeout=60),
                   "checkpoint of query 'bronze' is damaged", problem, f"checkpoint: {ckpt}",
                   f"mv {ckpt} {ckpt}.broken", 'README.md, "Checkpoint recovery"')


# --- deleted checkpoints -------------------------------------------------------------------------


def test_deleted_silver_checkpoint_is_refused_then_recovered(lake: Config, spark,  # noqa: ANN001
                                                             tmp_path: Path) -> None:
    copy = _copy_lake(lake, tmp_path)  # every table, no checkpoint
    quarantine = copy.paths.table(QUARANTINE)
    assert _count(quarantine) == BAD
    assert_refused(lakehouse(copy, "run", "--once", "--layers", "silver", timeout=60),
                   "query 'silver' has no checkpoint", f"{QUARANTINE} already holds {BAD} rows",
                   f"delete {quarantine}")
    # The documented recovery: delete the quarantine; silver rebuilds it from bronze.
    shutil.rmtree(quarantine)
    assert preflight.check(copy, ["silver"]) == copy
    assert runner.run_once(spark, copy, ["silver"]) == {"silver": GOOD + BAD}
    assert (_count(quarantine), _count(copy.paths.table(SILVER_READINGS))) == (BAD, GOOD)


def test_deleted_bronze_checkpoint_resumes_after_the_table(lake: Config, tmp_path: Path) -> None:
    copy = _copy_lake(lake, tmp_path)  # bronze holds the first 12 records; no checkpoint
    _produce(copy, [_reading(i) for i in range(GOOD, GOOD + 5)])
    result = lakehouse(copy, "run", "--once", "--layers", "bronze")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "bronze: 5 rows" in result.stdout
    assert "resuming after them" in result.stderr
    held = connect().execute(
        f"SELECT partition, \"offset\" FROM delta_scan('{copy.paths.table(BRONZE_RAW)}')"
    ).fetchall()
    produced = [(p, o) for p, end in end_offsets(copy, copy.kafka.topic_in).items()
                for o in range(end)]
    assert sorted(held) == sorted(produced)  # every record once: none twice, none skipped


def test_damage_only_spark_sees_ends_in_a_short_message(lake: Config, spark,  # noqa: ANN001
                                                        tmp_path: Path) -> None:
    """Offsets of another table: valid files, so the preflight passes; Spark refuses them.
    The runner's message is then one line of Spark's error plus where to look."""
    copy = _copy_lake(lake, tmp_path, checkpoints=("silver",))
    ckpt = copy.paths.checkpoint("silver")
    entry = _latest(ckpt / "offsets")
    lines = entry.read_text().splitlines()
    source = json.loads(lines[2])
    lines[2] = json.dumps({**source, "reservoirId": str(uuid.uuid4())})
    entry.write_text("\n".join(lines))
    (entry.parent / f".{entry.name}.crc").unlink(missing_ok=True)  # as a hand edit leaves it
    assert preflight.checkpoint_problem(ckpt) is None
    with pytest.raises(runner.RunnerError) as failed:
        runner.run_once(spark, copy, ["silver"])
    message = str(failed.value)
    assert message.startswith("query silver failed: ")
    assert f"checkpoint: {ckpt}" in message and "Checkpoint recovery" in message
    assert len(message.splitlines()) == 3 and "\tat " not in message, message


# --- the alerts query's state layout -------------------------------------------------------------


def test_alerts_checkpoint_of_another_state_layout_is_refused(lake: Config, spark,  # noqa: ANN001
                                                               tmp_path: Path) -> None:
    from jobs.alerts_job import LAYOUT_FILE, start_alerts

    copy = _copy_lake(lake, tmp_path).with_overrides(
        {"kafka.topic_alerts": f"bad-ops-alerts-{uuid.uuid4().hex[:8]}"})
    create_topics(copy, {copy.kafka.topic_alerts: 1})
    start_alerts(spark, copy, trigger={"availableNow": True}).awaitTermination()
    ckpt = copy.paths.checkpoint("alerts")
    assert preflight._batches(ckpt / "offsets") and (ckpt / LAYOUT_FILE).is_file()
    assert preflight.check_alerts_layout(copy) is None  # the same config fits

    other_buckets = lakehouse(copy, "--set", "alerts.key_buckets=8", "run", "--once",
                              "--layers", "gold", timeout=60)
    assert_refused(other_buckets, "checkpoint of query 'alerts' does not fit",
                   "made with alerts.key_buckets=64 but the config says 8",
                   "--set alerts.key_buckets=64", f"mv {ckpt} {ckpt}.broken")
    (ckpt / LAYOUT_FILE).unlink()  # as a checkpoint of the per-sensor layout has it
    assert_refused(lakehouse(copy, "run", "--once", "--layers", "gold", timeout=60),
                   "one state key per sensor", f"mv {ckpt} {ckpt}.broken")
