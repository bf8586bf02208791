"""Connecting a driver to Ray without hanging on a dead cluster.

A plain `ray.init()` joins the cluster named in Ray's address file (`/tmp/ray/ray_current_cluster`)
when one exists. A head that was killed rather than stopped leaves that file behind, and then
`ray.init()` waits forever on the dead address. So: an explicit address (argument or
`RAY_ADDRESS`, which `ray job submit` sets for its drivers) is used as given; else a recorded
cluster is joined only if its address answers; else a local Ray is started.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 2.0


def recorded_cluster_address() -> str:
    """The address in Ray's address file ("" when there is none)."""
    from ray._private.utils import read_ray_address

    return read_ray_address() or ""


def answers(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to `host:port` opens within `timeout_s`."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def ray_address(address: str = "") -> str:
    """The `ray.init` address to use for `address` ("" = not configured): see the module doc."""
    address = address or os.environ.get("RAY_ADDRESS", "")
    if address:
        return address
    recorded = recorded_cluster_address()
    if recorded and answers(recorded):
        return "auto"
    if recorded:
        logger.warning(
            "Ray's address file names %s, which does not answer (a head killed without "
            "`ray stop`); starting a local Ray instead",
            recorded,
        )
    return "local"


def connect_ray(address: str = "", **options: Any) -> None:
    """`ray.init` at `ray_address(address)` unless already connected. `options` go to
    `ray.init`; those only a new local Ray accepts (num_cpus, include_dashboard, ...) are
    dropped when joining a cluster."""
    import ray

    if ray.is_initialized():
        return
    resolved = ray_address(address)
    if resolved != "local":
        for key in ("num_cpus", "num_gpus", "include_dashboard", "resources"):
            options.pop(key, None)
    ray.init(address=resolved, **options)
