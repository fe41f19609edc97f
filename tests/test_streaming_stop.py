"""A stop that interrupts a foreachBatch function ends the query as stopped, in few words.

Spark recognises the interruption with a regex (`StreamExecution.PROXY_ERROR`) over the text
py4j hands back; over a full traceback that regex overflowed the stream thread's stack.
"""

from __future__ import annotations

import traceback

import pytest

from jobs.streaming import BatchInterrupted, stoppable


def _interrupted_jvm_call(spark) -> None:  # noqa: ANN001
    """A JVM call raising InterruptedException, as one does when query.stop() interrupts it."""
    thread = spark.sparkContext._jvm.java.lang.Thread  # noqa: SLF001
    thread.currentThread().interrupt()
    thread.sleep(1000)


def test_interruption_reaches_spark_short_and_recognised(spark) -> None:  # noqa: ANN001
    def batch_fn(_batch: object, _batch_id: int) -> None:
        _interrupted_jvm_call(spark)

    with pytest.raises(BatchInterrupted) as caught:
        stoppable(batch_fn)(None, 7)
    sent = "".join(traceback.format_exception(caught.value))  # what py4j sends the JVM
    assert "java.lang.InterruptedException" in sent
    assert len(sent) < 2_000
    jvm = spark.sparkContext._jvm  # noqa: SLF001
    execution = jvm.org.apache.spark.sql.execution.streaming.runtime.StreamExecution
    # Spark's own test: an interruption, so the query ends as stopped rather than failed.
    assert execution.isInterruptionException(jvm.py4j.Py4JException(sent),
                                             spark.sparkContext._jsc.sc())  # noqa: SLF001


def test_other_jvm_errors_pass_through_unchanged(spark) -> None:  # noqa: ANN001
    def batch_fn(_batch: object, _batch_id: int) -> None:
        spark.sparkContext._jvm.java.lang.Integer.parseInt("not a number")  # noqa: SLF001

    with pytest.raises(Exception, match="not a number") as caught:
        stoppable(batch_fn)(None, 1)
    assert not isinstance(caught.value, BatchInterrupted)
