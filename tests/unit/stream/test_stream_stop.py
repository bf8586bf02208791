"""`python -m ray_deepsort.stream.stop` (the pods' preStop hook) with a fake jobs API."""

from __future__ import annotations

from dataclasses import dataclass

from ray_deepsort.stream.stop import active_jobs, stop_and_wait


@dataclass
class Job:
    submission_id: str | None
    status: str


class FakeJobs:
    """A jobs API whose stopped jobs end after `polls_to_stop` listings; `down` = unreachable."""

    def __init__(self, jobs: list[Job], polls_to_stop: int = 2, down: bool = False) -> None:
        self.jobs = jobs
        self.polls_to_stop = polls_to_stop
        self.down = down
        self.stopped: list[str] = []
        self.listings = 0

    def list_jobs(self) -> list[Job]:
        if self.down:
            raise ConnectionError("connection refused")
        self.listings += 1
        if self.stopped and self.listings > self.polls_to_stop:
            for job in self.jobs:
                if job.submission_id in self.stopped:
                    job.status = "STOPPED"
        return self.jobs

    def stop_job(self, submission_id: str) -> bool:
        self.stopped.append(submission_id)
        return True


def test_stops_active_jobs_and_waits_until_they_end() -> None:
    api = FakeJobs(
        [Job("a", "RUNNING"), Job("b", "SUCCEEDED"), Job("c", "PENDING"), Job(None, "RUNNING")]
    )
    left = stop_and_wait(api, timeout_s=60, sleep=lambda _: None)
    assert left == [] and api.stopped == ["a", "c"]  # driver-only jobs have no submission id
    assert api.listings > 2  # it waited for them


def test_wait_only_stops_nothing_and_gives_up_at_the_timeout() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    api = FakeJobs([Job("a", "RUNNING")])
    left = stop_and_wait(api, timeout_s=10, wait_only=True, clock=lambda: now[0], sleep=sleep)
    assert left == ["a"] and api.stopped == [] and now[0] >= 10


def test_an_unreachable_head_means_nothing_to_wait_for() -> None:
    api = FakeJobs([Job("a", "RUNNING")], down=True)
    assert active_jobs(api) is None
    assert stop_and_wait(api, timeout_s=60, sleep=lambda _: None) == []
