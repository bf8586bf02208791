"""Fetching known models' files: checksummed, cached in the user's cache directory.

A file is used only if its sha256 matches the table in `known_models`, whether it comes from a
folder the user names, the cache, or the network; a download goes to a temporary file first and
is renamed into the cache only after its checksum holds, so a cut connection never leaves a
half file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from ray_deepsort.reid.known_models import OMZ_BASE_URL, KnownFile, KnownModel

logger = logging.getLogger(__name__)

# Environment overrides: where models are cached, and a mirror of Intel's model storage.
CACHE_ENV = "RAY_DEEPSORT_CACHE"
BASE_URL_ENV = "RAY_DEEPSORT_MODEL_URL"
_CHUNK = 1 << 20


class ChecksumMismatchError(ValueError):
    """A model file whose sha256 is not the one we know for it."""


def cache_dir() -> Path:
    """$RAY_DEEPSORT_CACHE, else $XDG_CACHE_HOME/ray-deepsort, else ~/.cache/ray-deepsort."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ray-deepsort"


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: KnownFile) -> None:
    actual = sha256_of(path)
    if actual != expected.sha256:
        raise ChecksumMismatchError(
            f"{path} has sha256 {actual}, but {expected.path} should have {expected.sha256}: "
            "the file is truncated, corrupt or another model; delete it and fetch it again"
        )


def locate_files(
    model: KnownModel,
    variant: str,
    path: str | Path | None = None,
    base_url: str | None = None,
) -> list[Path]:
    """Local, verified paths of `model`'s `variant` files (the load file first).

    With `path` (a folder, or the load file itself) nothing is downloaded: files are looked up
    there by their relative path or by name. Without it they come from the cache, downloaded
    first from `base_url` (default: $RAY_DEEPSORT_MODEL_URL, else Intel's storage) if needed.
    """
    files = model.variants[variant]
    if path is not None:
        return [_find_local(Path(path), known, model.name) for known in files]
    if not model.downloadable:
        raise FileNotFoundError(
            f"{model.name} cannot be downloaded by ray-deepsort; pass path= to its files"
        )
    base = (base_url or os.environ.get(BASE_URL_ENV) or OMZ_BASE_URL).rstrip("/")
    folder = cache_dir() / "models" / model.name
    found = []
    for known in files:
        target = folder / known.path
        if target.is_file():
            try:
                verify(target, known)
                found.append(target)
                continue
            except ChecksumMismatchError:
                logger.warning("cached %s fails its checksum: downloading it again", target)
        _download(f"{base}/{model.name}/{known.path}", target, known)
        found.append(target)
    return found


def _find_local(path: Path, known: KnownFile, name: str) -> Path:
    if path.is_file():
        path = path.parent
    for candidate in (path / known.path, path / known.filename):
        if candidate.is_file():
            verify(candidate, known)
            return candidate
    raise FileNotFoundError(f"{known.filename} of {name} is not in {path}")


def _download(url: str, target: Path, known: KnownFile) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s", url)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{known.filename}.")
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out, _CHUNK)
        verify(Path(temporary), known)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
