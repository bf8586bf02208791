"""How the driver folds ingest workers' summaries into the job's, and the latency histogram."""

from __future__ import annotations

import numpy as np
import pytest

from ray_deepsort.stream.latency import (
    EDGES_S,
    count_latencies,
    describe,
    difference,
    merged,
    percentile,
)
from ray_deepsort.stream.summary import JobSummary, merge


def test_percentiles_of_the_histogram_are_within_one_bucket() -> None:
    rng = np.random.default_rng(0)
    seconds = rng.lognormal(mean=-2.0, sigma=1.0, size=20_000)
    histogram: dict[str, int] = {}
    count_latencies(histogram, seconds[:7_000])
    count_latencies(histogram, seconds[7_000:])  # counts add up
    assert sum(histogram.values()) == seconds.size
    step = EDGES_S[1] / EDGES_S[0]
    for q in (1, 50, 90, 99):
        exact = float(np.percentile(seconds, q))
        assert exact <= percentile(histogram, q) <= exact * step * 1.001, q


def test_merged_histograms_equal_one_over_all_values_and_differences_give_an_interval() -> None:
    a: dict[str, int] = {}
    b: dict[str, int] = {}
    both: dict[str, int] = {}
    values = np.array([0.0005, 0.02, 0.02, 0.3, 5.0, 1e6, -1.0])  # clock skew counts as 0
    count_latencies(a, values[:3])
    count_latencies(b, values[3:])
    count_latencies(both, values)
    assert merged([a, b]) == both
    assert difference(both, a) == b
    assert percentile({}, 50) is None and describe({}) == "p50=- p99=-"
    assert percentile(both, 100) == pytest.approx(EDGES_S[-1])  # overflow: the last edge
    p50 = percentile(a, 50)
    assert p50 is not None and 0.02 <= p50 < 0.0225 and percentile(a, 99) == p50
    assert describe(a) == f"p50={p50:.3g}s p99={p50:.3g}s"


def test_merge_adds_counters_and_keeps_each_partition_widest() -> None:
    """Dead incarnations count by their last report; a partition's committed offset is the
    highest any worker committed and its start the lowest (where the run took it over)."""
    first = JobSummary(
        frames=10,
        dead_letters=1,
        dead_letter_codes={"bad_box": 1},
        batches=2,
        committed={"f:0": 11},
        started={"f:0": 0},
        latency={"40": 10},
        processing_s=3.0,
    )
    second = JobSummary(
        frames=25,
        batches=3,
        dead_letter_codes={"bad_box": 2, "too_big": 1},
        committed={"f:0": 30, "f:1": 7},
        started={"f:0": 8, "f:1": 2},
        latency={"40": 5, "60": 20},
        processing_s=2.0,
    )
    job = JobSummary(stop_reason="stop requested", ingest_restarts=1)
    merge(job, [first, second])
    assert (job.frames, job.dead_letters, job.batches) == (35, 1, 5)
    assert job.dead_letter_codes == {"bad_box": 3, "too_big": 1}
    assert job.committed == {"f:0": 30, "f:1": 7} and job.started == {"f:0": 0, "f:1": 2}
    assert job.records_done() == 30 + 5  # records committed since each partition was taken over
    assert job.latency == {"40": 15, "60": 20}
    assert job.latency_p50_s == pytest.approx(EDGES_S[60])
    assert job.processing_s == 3.0  # workers ran side by side
    assert (job.stop_reason, job.ingest_restarts) == ("stop requested", 1)  # the driver's own
    assert JobSummary.from_dict(job.to_dict()) == job


def test_a_partition_taken_over_from_another_worker_notices_a_broker_that_lost_its_state() -> None:
    """The driver passes every worker's committed offsets on: a worker that takes a partition
    over from another one, after the broker lost its offsets, resumes at the job's offset."""
    from kafka.structs import TopicPartition

    from ray_deepsort.stream.ledger import PartitionLedger

    tp = TopicPartition("frames", 1)
    ledger = PartitionLedger()
    assert ledger.reclaim(tp, None) is None  # nothing known: the broker's word goes
    ledger.job_committed = {"frames:1": 32, "frames:0": 7}
    assert ledger.reclaim(tp, 40) is None  # the broker is ahead: a normal takeover
    assert ledger.reclaim(tp, None) == 32 and ledger.pending == {tp: 32}
    ledger.committed[tp] = 50  # this worker's own offset, newer than the job's view
    assert ledger.reclaim(tp, 10) == 50


def test_status_answers_before_and_while_the_worker_opens(tmp_path) -> None:
    """The driver asks for a status at any time, also before `open` built every piece."""
    from ray_deepsort.stream.config import load_config
    from ray_deepsort.stream.worker import PartitionWorker

    worker = PartitionWorker(load_config(None, [f'output.path="{tmp_path}"']))
    summary, idle = worker.status({"frames:0": 3})
    assert (summary.frames, summary.inflight, idle) == (0, 0, False)
