"""Connecting a driver to Ray: start-up either proceeds or fails fast, it never hangs.

`ray.init()` with no address joins the cluster named in Ray's address file
(`/tmp/ray/ray_current_cluster`); a head killed rather than stopped leaves that file behind, and
`ray.init` then waits forever on the dead address. So the address is decided here:
- none given and not inside a Ray job (no `RAY_ADDRESS`): a new local Ray, as `demo` starts;
- given (argument, or `RAY_ADDRESS`, which `ray job submit` sets for its drivers): its host and
  port must answer within `CONNECT_TIMEOUT_S`, else `RayUnreachableError` names it. "auto" means
  the cluster in Ray's address file, checked the same way.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 10.0
# `ray.init` options that only a new local Ray accepts.
LOCAL_ONLY_OPTIONS = ("num_cpus", "num_gpus", "include_dashboard", "resources")


class RayUnreachableError(RuntimeError):
    """The Ray address asked for does not answer."""


def recorded_cluster_address() -> str:
    """The address in Ray's address file ("" when there is none)."""
    from ray._private.utils import read_ray_address

    return read_ray_address() or ""


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if not parts.hostname or parts.port is None:
        raise RayUnreachableError(f"Ray address {address!r} is not host:port (or ray://host:port)")
    return parts.hostname, parts.port


def check_answers(address: str, timeout_s: float | None = None) -> None:
    """Raise `RayUnreachableError` unless a TCP connection to `address` opens in time."""
    timeout_s = CONNECT_TIMEOUT_S if timeout_s is None else timeout_s
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as error:
        raise RayUnreachableError(
            f"Ray at {address} does not answer within {timeout_s:g} s ({error}); check "
            "--ray-address / ray.address / RAY_ADDRESS, or leave it empty for a local Ray"
        ) from None


def ray_address(address: str = "") -> str:
    """The `ray.init` address for a configured `address` ("" = none): see the module doc."""
    address = address or os.environ.get("RAY_ADDRESS", "")
    if not address or address == "local":
        return "local"
    if address == "auto":
        recorded = recorded_cluster_address()
        if not recorded:
            raise RayUnreachableError("Ray address 'auto': no running Ray cluster is recorded")
        address = recorded
    check_answers(address)
    return address


def connect_ray(address: str = "", **options: Any) -> None:
    """`ray.init` at `ray_address(address)` unless already connected. `options` go to
    `ray.init`; those only a new local Ray accepts are dropped when joining a cluster."""
    import ray

    if ray.is_initialized():
        return
    resolved = ray_address(address)
    if resolved != "local":
        options = {k: v for k, v in options.items() if k not in LOCAL_ONLY_OPTIONS}
    ray.init(address=resolved, **options)
