"""`python -m ray_deepsort.stream.stop`: stop a cluster's Ray jobs and wait until they drained.

The head pod's preStop hook in deploy/rayjob.yaml (and the worker pods', with `--wait-only`):
deleting a RayJob or its RayCluster kills the pods, and a driver killed mid-batch neither
commits nor prints its summary (the output stays correct: the next run replays). `ray job stop`
sends the driver SIGTERM, the stream job then finishes its batches in flight and commits; Ray
SIGKILLs it after `RAY_JOB_STOP_WAIT_TIME_S`. Workers wait so that the embedders and tracker
shards the drain needs are still there. A dashboard that does not answer means nothing to wait
for (the head is gone).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

ACTIVE = ("PENDING", "RUNNING")


def active_jobs(client: Any) -> list[str] | None:
    """Submission ids of pending or running jobs; None when the dashboard does not answer."""
    try:
        jobs = client.list_jobs()
    except Exception:  # connection refused, head shutting down: nothing left to wait for
        return None
    return [job.submission_id for job in jobs if str(job.status) in ACTIVE and job.submission_id]


def stop_and_wait(
    client: Any,
    timeout_s: float,
    wait_only: bool = False,
    poll_s: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Stop every active job (unless `wait_only`) and wait up to `timeout_s` until none is
    active; returns the ids still active then."""
    deadline = clock() + timeout_s
    active = active_jobs(client) or []
    if not wait_only:
        for submission_id in active:
            print(f"stopping {submission_id}", flush=True)
            try:
                client.stop_job(submission_id)
            except Exception as error:  # it may have ended since the listing
                print(f"stop {submission_id}: {error}", flush=True)
    while active and clock() < deadline:
        sleep(poll_s)
        active = active_jobs(client) or []
    return active


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ray_deepsort.stream.stop", description=__doc__)
    parser.add_argument("--address", default="http://127.0.0.1:8265", help="Ray dashboard URL")
    parser.add_argument(
        "--timeout",
        type=float,
        default=150.0,
        help="seconds to wait (keep it above RAY_JOB_STOP_WAIT_TIME_S, below the pod's "
        "terminationGracePeriodSeconds)",
    )
    parser.add_argument(
        "--wait-only", action="store_true", help="only wait for the jobs to end (worker pods)"
    )
    args = parser.parse_args(argv)
    try:
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(args.address)
    except Exception as error:
        print(f"no Ray jobs API at {args.address} ({error}): nothing to stop", flush=True)
        return 0
    left = stop_and_wait(client, args.timeout, wait_only=args.wait_only)
    if left:
        print(f"still running after {args.timeout:g}s: {', '.join(left)}", flush=True)
        return 1
    print("no Ray job running", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
