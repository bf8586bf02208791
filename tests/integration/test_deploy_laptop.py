"""deploy/README.md's laptop commands on a fresh machine, and its graceful stop.

A fresh machine: an empty HOME (no ~/.ray/auth_token) and a Ray head of its own. The README's
commands run as written, with only what must differ here replaced: free ports and a private
temp dir for `ray start` (other Rays may run on this machine), this test's broker, topics and
output. Then `ray job stop` (the README's command, with the README's RAY_JOB_STOP_WAIT_TIME_S)
must let the job drain, commit and print its summary.

Slow (a Ray head, about a minute each): only in CI (CI=true) or with
RAY_DEEPSORT_TEST_JOB_SUBMIT=1. The head is stopped through its own process group, never with
`ray stop` (which would end every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from stream_support import Topics, ray_cli, starts_a_ray_head, wait_for_dashboard

from ray_deepsort.pipeline.parquet import ParquetResultWriter
from ray_deepsort.stream.broker import LocalBroker, free_port
from ray_deepsort.stream.publish import FramePublisher, publish, synthetic_frames

pytestmark = [pytest.mark.integration, starts_a_ray_head]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "deploy" / "README.md"
README_DASHBOARD = "http://127.0.0.1:8265"


def readme_block(heading: str, index: int = 0) -> list[str]:
    """The commands of the `index`-th bash block after `heading` (continuations joined)."""
    text = README.read_text()
    section = text[text.index(heading) :]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line for line in blocks[index].replace("\\\n", " ").splitlines() if line.strip()]


@dataclass
class LaptopHead:
    env: dict[str, str]
    url: str
    commands: list[str]  # the README's commands after `ray start`


@pytest.fixture(scope="module")
def laptop_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LaptopHead]:
    """The README's set-up commands in an empty HOME: exports, token, `ray start --head`."""
    commands = readme_block("## Laptop or single machine")
    exports, token, start, *rest = commands
    assert exports.startswith("export ") and token.startswith("ray get-auth-token --generate")
    assert start.startswith("ray start --head")
    home = tmp_path_factory.mktemp("home")
    env = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
    }
    env.update(dict(item.split("=", 1) for item in shlex.split(exports)[1:]))
    generated = subprocess.run(
        ["bash", "-c", token], env=env, capture_output=True, text=True, timeout=120
    )
    assert generated.returncode == 0, generated.stderr
    assert (home / ".ray" / "auth_token").is_file()
    dashboard_port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rd-laptop-", dir="/tmp")  # short: unix sockets
    private = [
        "--block",
        f"--port={free_port()}",
        f"--dashboard-port={dashboard_port}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
    ]
    argv = shlex.split(start)
    head = subprocess.Popen(
        [ray_cli(), *argv[1:], *private],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        wait_for_dashboard(url, 120)
        yield LaptopHead(env, url, rest)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            head.wait(timeout=60)
        time.sleep(2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _here(command: str, head: LaptopHead, broker: LocalBroker, topics: Topics, output: Path) -> str:
    """A README command with this test's dashboard, broker, topics and output."""
    command = command.replace(README_DASHBOARD, head.url)
    command = command.replace("localhost:9092", broker.bootstrap_servers)
    command = command.replace('"$PWD/output/stream"', shlex.quote(str(output)))
    if "jobs/track_stream.py" in command:
        command += (
            f" --frames-topic={topics.frames} --results-topic={topics.results}"
            f" --dead-letter-topic={topics.dead_letters} --group-id={topics.group} --model=none"
        )
    return command


def _submit(command: str, head: LaptopHead, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", "-c", command],
        cwd=ROOT,
        env=head.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def _summary(log: str) -> dict[str, object]:
    text = log[log.index('{\n  "summary"') :]
    return json.loads(text[: text.index("\n}") + 2])["summary"]


def _run_submit(command: str, head: LaptopHead) -> subprocess.CompletedProcess[str]:
    """Submit, retrying while the job agent is not up yet (seconds to minutes after start)."""
    deadline = time.monotonic() + 240
    while True:
        done = subprocess.run(
            ["bash", "-c", command],
            cwd=ROOT,
            env=head.env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        if "No available agent" not in done.stdout + done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(3)


def test_readme_commands_on_a_fresh_machine(
    laptop_head: LaptopHead, broker: LocalBroker, topics: Topics, tmp_path: Path
) -> None:
    (submit,) = laptop_head.commands
    assert submit.startswith("ray job submit")
    _, frames = synthetic_frames(
        2, 40, objects=6, width=480, height=270, image_format="none", embeddings="identity"
    )
    with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
        publish(frames, publisher, partitions={"cam0": 0, "cam1": 1})
    output = tmp_path / "out"
    command = _here(submit, laptop_head, broker, topics, output)
    done = _run_submit(f"{command} --expected-frames=80 --max-idle=30", laptop_head)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _summary(done.stdout)["frames"] == 80
    assert ParquetResultWriter(output).read("frames").num_rows == 80


def test_ray_job_stop_drains_commits_and_prints_the_summary(
    laptop_head: LaptopHead, broker: LocalBroker, topics: Topics, tmp_path: Path
) -> None:
    (submit,) = laptop_head.commands
    follow, stop = readme_block("## Laptop or single machine", 1)
    output = tmp_path / "out"
    _, generated = synthetic_frames(
        2, 600, objects=6, width=480, height=270, image_format="none", embeddings="identity"
    )
    frames = list(generated)
    with FramePublisher(broker.bootstrap_servers, topics.frames) as publisher:
        publish(frames[:100], publisher, partitions={"cam0": 0, "cam1": 1})
        # Frames keep coming while the job is stopped, so batches are in flight then.
        feeder = threading.Thread(
            target=publish,
            args=(frames[100:], publisher),
            kwargs={"realtime": True, "partitions": {"cam0": 0, "cam1": 1}},
        )
        job = _submit(_here(submit, laptop_head, broker, topics, output), laptop_head)
        submission_id = ""
        assert job.stdout is not None
        for line in job.stdout:
            match = re.search(r"raysubmit_\w+", line)
            if match:
                submission_id = match.group(0)
                break
        assert submission_id, "no submission id in ray job submit's output"
        rest: list[str] = []  # keep reading: a full pipe would block `ray job submit`
        reader = threading.Thread(target=lambda: rest.extend(job.stdout or ()), daemon=True)
        reader.start()
        deadline = time.monotonic() + 240
        while not _written(output, 50):
            assert time.monotonic() < deadline and job.poll() is None, "the job does not run"
            time.sleep(1)
        feeder.start()
        time.sleep(3)
        stop_command = _here(
            stop.replace("<submission id>", submission_id), laptop_head, broker, topics, output
        )
        stopped = subprocess.run(
            ["bash", "-c", stop_command],
            cwd=ROOT,
            env=laptop_head.env,
            capture_output=True,
            text=True,
            timeout=200,
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        feeder.join(timeout=120)
    job.wait(timeout=120)
    logs = subprocess.run(
        [
            "bash",
            "-c",
            _here(
                follow.replace("<submission id>", submission_id),
                laptop_head,
                broker,
                topics,
                output,
            ),
        ],
        cwd=ROOT,
        env=laptop_head.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    summary = _summary(logs.stdout)
    assert summary["stop_reason"] == "stop requested"
    rows = ParquetResultWriter(output).read("frames").num_rows
    # Everything written was committed: the batches in flight were finished, not dropped.
    committed = summary["committed"]
    assert isinstance(committed, dict) and sum(committed.values()) == rows == summary["frames"]


def _written(output: Path, frames: int) -> bool:
    try:
        return ParquetResultWriter(output).read("frames").num_rows >= frames
    except (FileNotFoundError, OSError, ValueError):
        return False
