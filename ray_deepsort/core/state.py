"""Validation of `DeepSORTTracker.state_dict()` output before a tracker loads it.

A checkpoint that went through a storage fault, a partial copy or a hand edit must be refused
with a message naming the field, never tracked on: a NaN covariance or a shortened column
otherwise changes a stream's IDs without a word. Besides shapes, dtypes and finiteness, the
checks use invariants every saved state holds (rows in creation order, IDs handed out in that
order, tentative tracks seen on the last frame, gallery heads following counts), which also
catch most rows shifted or shuffled within one column. A CRC-32 saved with the state catches
the rest of the small arrays; the gallery, most of a state's bytes, is checked against a
fingerprint per row saved with it (`gallery_fingerprint`), reading it once. Every check is
vectorised (cost: `benchmarks/state_memory.py`), and nothing here touches a tracker.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

# 2: `last_xyah` column and the effective `appearance_threshold`.
# 3: `gallery_fingerprint` stands in for the gallery bytes in the checksum.
# Versions 1 and 2 still load.
STATE_FORMAT_VERSION = 3
SUPPORTED_VERSIONS = (1, 2, STATE_FORMAT_VERSION)

_INT_SCALARS = (
    "gallery_budget",
    "frame_count",
    "next_track_id",
    "next_birth",
    "last_frame_index",
    "gallery_dim",
)
_FLOAT_SCALARS = ("last_timestamp",)
# Per-track columns: kind ("f" float64, "i" int64, "b" bool) and trailing shape.
_PER_TRACK: dict[str, tuple[str, tuple[int, ...]]] = {
    "mean": ("f", (8,)),
    "covariance": ("f", (8, 8)),
    "confirmed": ("b", ()),
    "hits": ("i", ()),
    "age": ("i", ()),
    "time_since_update": ("i", ()),
    "track_id": ("i", ()),
    "birth": ("i", ()),
    "class_id": ("i", ()),
    "last_xyah": ("f", (4,)),
    "gallery_count": ("i", ()),
    "gallery_head": ("i", ()),
}
_V2_ONLY = ("last_xyah", "appearance_threshold")
# What `state_checksum` covers besides the gallery, with each one's canonical dtype kind.
_CHECKSUM_KEYS = (
    "format_version",
    *_INT_SCALARS,
    *_FLOAT_SCALARS,
    "appearance_threshold",
    *_PER_TRACK,
)
_CHECKSUM_KINDS = {
    "format_version": "i",
    **dict.fromkeys(_INT_SCALARS, "i"),
    **dict.fromkeys((*_FLOAT_SCALARS, "appearance_threshold"), "f"),
    **{name: kind for name, (kind, _) in _PER_TRACK.items()},
}
_CANONICAL: dict[str, Any] = {"i": np.int64, "f": np.float64, "b": np.bool_}
_INT64_LIMIT = 2.0**63
# Covariances: asymmetry and negative eigenvalues allowed, relative to each matrix's largest
# entry (a Kalman update leaves round-off of about 1e-16 of it).
_COVARIANCE_TOLERANCE = 1e-8
# Gallery features are unit vectors, so no element exceeds 1 (float16 rounding: about 1e-3).
_UNIT_BOUND = 1.0 + 1e-3
_GALLERY_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


class InvalidTrackerState(ValueError):
    """A tracker state that is incomplete or inconsistent; `field` names the culprit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid tracker state: {field}: {problem}")
        self.field = field
        self.problem = problem


def validate_state(state: Mapping[str, Any], gallery_budget: int) -> dict[str, Any]:
    """Check a state_dict completely; return it with canonical dtypes (version 1 upgraded).

    Raises `InvalidTrackerState` (a ValueError) for the first problem found. The result holds
    int64 / float64 / bool columns, the gallery features as a float array, and Python scalars.
    """
    if not isinstance(state, Mapping):
        raise InvalidTrackerState("state", f"must be a mapping, got {type(state).__name__}")
    if "format_version" not in state:
        raise InvalidTrackerState("format_version", "missing key")
    version = _int_scalar(state, "format_version")
    if version not in SUPPORTED_VERSIONS:
        raise InvalidTrackerState("format_version", f"unsupported tracker state format {version}")
    required = [*_INT_SCALARS, *_FLOAT_SCALARS, *_PER_TRACK, "gallery_features"]
    if version >= 2:
        required.append("appearance_threshold")
    else:
        required = [name for name in required if name not in _V2_ONLY]
    missing = [name for name in required if name not in state]
    if missing:
        raise InvalidTrackerState(missing[0], f"missing key (missing: {', '.join(missing)})")

    out: dict[str, Any] = {"format_version": version}
    for name in _INT_SCALARS:
        out[name] = _int_scalar(state, name)
    out["last_timestamp"] = _float_scalar(state, "last_timestamp")
    if version >= 2:
        out["appearance_threshold"] = _float_scalar(state, "appearance_threshold")
    _check_scalars(out, gallery_budget)

    columns = [name for name in _PER_TRACK if version >= 2 or name not in _V2_ONLY]
    for name in columns:
        kind, trailing = _PER_TRACK[name]
        out[name] = _column(state, name, kind, trailing)
    _check_lengths({name: len(out[name]) for name in columns})
    if version < 2:  # the last observed box was not saved: the filter mean stands in for it
        out["last_xyah"] = out["mean"][:, :4].copy()
    out["gallery_features"] = _gallery_features(state, out["gallery_dim"])
    _check_tracks(out, version)
    _check_gallery(out, gallery_budget)
    computed = _check_feature_values(state, out, version)
    if version >= 2:
        _check_checksum(state, out)
    if computed is not None:  # after the checksum: an edited fingerprint is named as such
        _check_fingerprint(out["gallery_features"], out["gallery_fingerprint"], computed)
    return out


def seal_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the gallery fingerprint and the checksum to a fresh state_dict."""
    state["gallery_fingerprint"] = gallery_fingerprint(state["gallery_features"])
    state["state_checksum"] = np.asarray(state_checksum(state), np.int64)
    return state


def gallery_fingerprint(features: np.ndarray) -> np.ndarray:
    """One value per gallery row, saved with the state so that loading reads the rows once.

    float32 rows: their projection on a fixed unit probe (float64), at memory speed (a CRC-32
    of the same bytes costs 6-10 times as much here). NaN or inf anywhere in a row makes its
    value non-finite; a row edited, negated or moved changes it by far more than the rounding of
    a float32 dot product, which is all that may differ on the machine that loads.
    float16 rows (numpy's float16 arithmetic is slow): their bits read as 64-bit words (rows
    zero-padded to whole words) and summed modulo 2**64 (uint64). Integer sums are the same on
    every machine, so they compare exactly, and any one changed element changes its row's sum.
    """
    if features.dtype == np.float16:
        bits = np.ascontiguousarray(features)
        missing = -bits.shape[1] % 4  # elements short of a whole last word
        if missing:
            bits = np.concatenate([bits, np.zeros((len(bits), missing), bits.dtype)], axis=1)
        return bits.view(np.uint64).sum(axis=1, dtype=np.uint64)
    return (features @ _probe(features.shape[1])).astype(np.float64)


def state_checksum(state: Mapping[str, Any]) -> int:
    """CRC-32 of a state's arrays in their canonical dtypes (version 2 or later).

    Rows swapped between tracks, or a value negated, can leave a well-formed state that tracks
    differently; only a code over the saved arrays tells. Canonical dtypes make a lossless cast
    of a counter or filter column (int64 saved as float64) keep the code. The gallery counts
    with its shape and dtype, then by its fingerprint (version 3) or, in version 2, by its bytes
    as saved, hashed in place without a copy.
    """
    crc = 0
    for name in _CHECKSUM_KEYS:
        crc = _crc(crc, name, np.asarray(state[name], _CANONICAL[_CHECKSUM_KINDS[name]]))
    features = np.asarray(state["gallery_features"])
    if _int_scalar(state, "format_version") < 3:
        return _crc(crc, "gallery_features", features)
    crc = zlib.crc32(f"gallery_features{features.shape}{features.dtype.str}".encode(), crc)
    fingerprint = np.asarray(state["gallery_fingerprint"], _fingerprint_dtype(features))
    return _crc(crc, "gallery_fingerprint", fingerprint)


def _crc(crc: int, name: str, array: np.ndarray) -> int:
    array = np.ascontiguousarray(array)
    crc = zlib.crc32(f"{name}{array.shape}".encode(), crc)
    return zlib.crc32(array.reshape(-1).view(np.uint8), crc)  # no copy of the bytes


def _check_checksum(state: Mapping[str, Any], clean: Mapping[str, Any]) -> None:
    if "state_checksum" not in state:
        raise InvalidTrackerState("state_checksum", "missing key")
    saved = _int_scalar(state, "state_checksum")
    if saved != state_checksum(clean):
        raise InvalidTrackerState(
            "state_checksum",
            "does not match the state's arrays: they were changed after the state was saved "
            "(storage fault, partial copy or hand edit)",
        )


@functools.lru_cache(maxsize=8)
def _probe(dim: int) -> np.ndarray:
    """A fixed float32 unit vector whose entries all have magnitudes within 2x of each other (a
    one-hot row still gets a clear fingerprint), from an integer hash of the index: the same on
    every machine and numpy version, unlike a random generator's stream."""
    mixed = np.arange(1, dim + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    mixed ^= mixed >> np.uint64(31)
    mixed *= np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= mixed >> np.uint64(29)
    magnitude = 0.5 + (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-54  # [0.5, 1)
    probe = np.where(mixed & np.uint64(1), -magnitude, magnitude)
    norm = float(np.linalg.norm(probe)) or 1.0  # dim 0: an empty probe
    probe = (probe / norm).astype(np.float32)
    probe.flags.writeable = False
    return probe


def fingerprint_tolerance(dim: int) -> float:
    """Largest difference two float32 dot products of a unit row and the probe can show: each
    is within dim * 2**-24 of the exact value whatever the summation order (Higham's bound),
    with a margin for float rounding of the row's norm."""
    return 2.5 * dim * 2.0**-24


def _fingerprint_dtype(features: np.ndarray) -> np.dtype:
    return np.dtype(np.uint64 if features.dtype == np.float16 else np.float64)


def _check_fingerprint(features: np.ndarray, saved: np.ndarray, computed: np.ndarray) -> None:
    if features.dtype == np.float16:
        matches = computed == saved  # integer sums: exact
    else:
        matches = np.abs(computed - saved) <= fingerprint_tolerance(features.shape[1])
    if not matches.all():
        raise InvalidTrackerState(
            "gallery_features",
            "do not match gallery_fingerprint: they were changed after the state was saved "
            "(storage fault, partial copy or hand edit)",
        )


# ---------------------------------------------------------------------- conversions
def _numeric(state: Mapping[str, Any], name: str) -> np.ndarray:
    """The value as a numeric numpy array; object, string and complex values are refused."""
    try:
        array = np.asarray(state[name])
    except (TypeError, ValueError) as error:
        raise InvalidTrackerState(name, f"not an array ({error})") from None
    if array.dtype.kind not in "biuf":
        raise InvalidTrackerState(name, f"dtype {array.dtype} is not a real number type")
    return array


def _to_int(name: str, array: np.ndarray) -> np.ndarray:
    """int64 copy of `array`, refusing any value the cast would change."""
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise InvalidTrackerState(name, "holds NaN or inf where integers are expected")
        if (array != np.round(array)).any():
            raise InvalidTrackerState(name, "holds non-integral values where integers are expected")
        if (np.abs(array.astype(np.float64)) >= _INT64_LIMIT).any():
            raise InvalidTrackerState(name, "holds values beyond int64")
    elif array.dtype.kind == "u" and array.size and array.max() >= _INT64_LIMIT:
        raise InvalidTrackerState(name, "holds values beyond int64")
    return array.astype(np.int64)


def _to_bool(name: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind != "b" and not np.isin(array, (0, 1)).all():
        raise InvalidTrackerState(name, "must be boolean (or 0/1)")
    return array.astype(np.bool_)


def _to_float(name: str, array: np.ndarray) -> np.ndarray:
    """float64 copy; the filter state is saved as float64, so a narrower or integer type means
    a cast on the way that may have dropped precision."""
    if array.dtype.kind != "f" or array.dtype.itemsize < 8:
        raise InvalidTrackerState(name, f"must be float64 (as saved), got {array.dtype}")
    values = array.astype(np.float64)
    if not np.isfinite(values).all():
        raise InvalidTrackerState(name, "holds NaN or inf")
    return values


def _scalar(state: Mapping[str, Any], name: str) -> np.ndarray:
    array = _numeric(state, name)
    if array.size != 1:
        raise InvalidTrackerState(name, f"must be a single value, got shape {array.shape}")
    return array.reshape(())


def _int_scalar(state: Mapping[str, Any], name: str) -> int:
    return int(_to_int(name, _scalar(state, name)))


def _float_scalar(state: Mapping[str, Any], name: str) -> float:
    value = _scalar(state, name)
    if value.dtype.kind == "b" or (value.dtype.kind == "f" and value.dtype.itemsize < 8):
        raise InvalidTrackerState(name, f"must be float64 (as saved), got {value.dtype}")
    return float(value.astype(np.float64))


def _column(
    state: Mapping[str, Any], name: str, kind: str, trailing: tuple[int, ...]
) -> np.ndarray:
    array = _numeric(state, name)
    if array.ndim != 1 + len(trailing) or array.shape[1:] != trailing:
        expected = ", ".join(["N", *map(str, trailing)])
        raise InvalidTrackerState(name, f"must have shape [{expected}], got {list(array.shape)}")
    if kind == "f":
        return _to_float(name, array)
    if kind == "b":
        return _to_bool(name, array)
    return _to_int(name, array)


def _gallery_features(state: Mapping[str, Any], dim: int) -> np.ndarray:
    array = _numeric(state, "gallery_features")
    if array.ndim != 2 or array.shape[1] != dim:
        raise InvalidTrackerState(
            "gallery_features", f"must have shape [sum(gallery_count), {dim}], got {array.shape}"
        )
    if array.dtype not in _GALLERY_DTYPES:
        raise InvalidTrackerState(
            "gallery_features", f"must be float32 or float16 (as saved), got {array.dtype}"
        )
    return array  # values: checked in one pass by validate_state


def _fingerprint_column(state: Mapping[str, Any], features: np.ndarray) -> np.ndarray:
    """float64 for float32 rows (castable without loss, as a filter column), uint64 exactly for
    float16 rows (wrapping sums: no other integer type holds them)."""
    if "gallery_fingerprint" not in state:
        raise InvalidTrackerState("gallery_fingerprint", "missing key")
    if features.dtype == np.float32:
        fingerprint = _column(state, "gallery_fingerprint", "f", ())
    else:
        fingerprint = _numeric(state, "gallery_fingerprint")
        if fingerprint.dtype != np.uint64 or fingerprint.ndim != 1:
            raise InvalidTrackerState(
                "gallery_fingerprint",
                f"must be uint64 [N] for a float16 gallery (as saved), got {fingerprint.dtype} "
                f"{list(fingerprint.shape)}",
            )
    if len(fingerprint) != len(features):
        raise InvalidTrackerState(
            "gallery_fingerprint",
            f"has {len(fingerprint)} rows, gallery_features has {len(features)}",
        )
    return fingerprint


# ---------------------------------------------------------------------- consistency
def _check_lengths(lengths: dict[str, int]) -> None:
    """One row per track everywhere; the odd one out is named (not whichever came first)."""
    values, counts = np.unique(list(lengths.values()), return_counts=True)
    if len(values) > 1:
        common = int(values[np.argmax(counts)])
        odd = next(name for name, length in lengths.items() if length != common)
        raise InvalidTrackerState(
            odd, f"has {lengths[odd]} rows, the other per-track arrays have {common}"
        )


def _check_scalars(out: dict[str, Any], gallery_budget: int) -> None:
    if out["gallery_budget"] != gallery_budget:
        raise InvalidTrackerState(
            "gallery_budget",
            f"state was saved with gallery_budget={out['gallery_budget']}, "
            f"this tracker has {gallery_budget}",
        )
    for name, low in (("frame_count", 0), ("next_track_id", 1), ("next_birth", 0)):
        if out[name] < low:
            raise InvalidTrackerState(name, f"must be >= {low}, got {out[name]}")
    if out["last_frame_index"] < -1:
        raise InvalidTrackerState(
            "last_frame_index", f"must be >= -1 (-1: none), got {out['last_frame_index']}"
        )
    if np.isinf(out["last_timestamp"]):
        raise InvalidTrackerState("last_timestamp", "must be finite or NaN (none)")
    if out["gallery_dim"] < 0:
        raise InvalidTrackerState("gallery_dim", f"must be >= 0, got {out['gallery_dim']}")
    threshold = out.get("appearance_threshold")
    if threshold is not None and not (np.isfinite(threshold) and threshold > 0):
        raise InvalidTrackerState("appearance_threshold", f"must be positive, got {threshold}")


def _check_tracks(out: dict[str, Any], version: int) -> None:
    """Counters, IDs, births and filter covariances of every track, all at once."""
    for name in ("hits", "age"):
        if (out[name] < 1).any():
            raise InvalidTrackerState(name, f"must be >= 1, got {out[name].min()}")
    since = out["time_since_update"]
    if (since < 0).any():
        raise InvalidTrackerState("time_since_update", f"must be >= 0, got {since.min()}")
    if (since > out["age"]).any():
        raise InvalidTrackerState("time_since_update", "exceeds the track's age")
    confirmed, track_id = out["confirmed"], out["track_id"]
    if (since[~confirmed] != 0).any():
        raise InvalidTrackerState(
            "time_since_update", "tentative tracks must have been seen on the last frame (0)"
        )
    if (track_id[~confirmed] != -1).any():
        raise InvalidTrackerState("track_id", "unconfirmed tracks must have track_id -1")
    ids = track_id[confirmed]
    if (ids < 1).any() or (ids >= out["next_track_id"]).any():
        raise InvalidTrackerState(
            "track_id", f"confirmed IDs must be in [1, next_track_id={out['next_track_id']})"
        )
    if len(np.unique(ids)) != len(ids):
        raise InvalidTrackerState("track_id", "confirmed IDs are not unique")
    if (np.diff(ids) <= 0).any():  # IDs are handed out in creation order, rows are saved in it
        raise InvalidTrackerState("track_id", "confirmed IDs do not increase with birth")
    birth = out["birth"]
    if (birth < 0).any() or (birth >= out["next_birth"]).any():
        raise InvalidTrackerState("birth", f"births must be in [0, next_birth={out['next_birth']})")
    if len(np.unique(birth)) != len(birth):
        raise InvalidTrackerState("birth", "births are not unique")
    if (np.diff(birth) <= 0).any():
        raise InvalidTrackerState("birth", "tracks are not in creation order")
    if version >= 2 and (out["last_xyah"][:, 2:] <= 0).any():
        raise InvalidTrackerState("last_xyah", "observed boxes must have positive aspect, height")
    _check_covariance(out["covariance"])


def _check_covariance(covariance: np.ndarray) -> None:
    """Symmetric and positive semi-definite within round-off, for the whole stack at once."""
    if len(covariance) == 0:
        return
    scale = np.abs(covariance).max(axis=(1, 2))
    tolerance = _COVARIANCE_TOLERANCE * np.maximum(scale, 1e-300)
    asymmetry = np.abs(covariance - covariance.transpose(0, 2, 1)).max(axis=(1, 2))
    if (asymmetry > tolerance).any():
        raise InvalidTrackerState("covariance", "is not symmetric")
    lowest = np.linalg.eigvalsh(covariance)[:, 0]
    if (lowest < -tolerance).any():
        raise InvalidTrackerState("covariance", "is not positive semi-definite")


def _check_gallery(out: dict[str, Any], budget: int) -> None:
    """Ring-buffer counts and heads within the budget, and as many features as counted."""
    counts, heads = out["gallery_count"], out["gallery_head"]
    if (counts < 0).any() or (counts > budget).any():
        raise InvalidTrackerState("gallery_count", f"must be in [0, gallery_budget={budget}]")
    if (heads < 0).any() or (heads >= budget).any():
        raise InvalidTrackerState("gallery_head", f"must be in [0, gallery_budget={budget})")
    filling = counts < budget
    if (heads[filling] != counts[filling]).any():  # writes start at entry 0 and wrap at budget
        raise InvalidTrackerState("gallery_head", "must equal gallery_count until it is full")
    features = out["gallery_features"]
    if len(features) != counts.sum():
        raise InvalidTrackerState(
            "gallery_features", f"has {len(features)} rows, gallery_count sums to {counts.sum()}"
        )
    if out["gallery_dim"] == 0 and counts.any():
        raise InvalidTrackerState("gallery_dim", "is 0 while galleries hold features")


def _check_feature_values(
    state: Mapping[str, Any], out: dict[str, Any], version: int
) -> np.ndarray | None:
    """Finite, unit-range features; from version 3 also their fingerprint, computed in the same
    pass (returned, to compare once the checksum vouches for the saved one)."""
    features = out["gallery_features"]
    if version < 3:
        _check_unit_range(features)
        return None
    out["gallery_fingerprint"] = _fingerprint_column(state, features)
    computed = gallery_fingerprint(features)  # the one pass over the features' values
    if features.dtype == np.float16:
        _check_unit_range(features)
    elif not np.isfinite(computed).all():  # NaN or inf anywhere in a float32 row propagates
        raise InvalidTrackerState("gallery_features", "holds NaN or inf")
    return computed


def _check_unit_range(features: np.ndarray) -> None:
    """Every feature element finite and within unit length, read as integers: for IEEE floats
    the magnitude orders like its bits, so two max passes over the bits (unsigned: negative
    elements; signed: positive ones) need no float16 arithmetic, which numpy does slowly."""
    if features.size == 0:
        return
    size = features.dtype.itemsize
    unsigned, signed = np.dtype(f"u{size}"), np.dtype(f"i{size}")
    limit = int(np.asarray(_UNIT_BOUND, features.dtype).view(unsigned))
    sign = 1 << (8 * size - 1)
    if (
        int(features.view(unsigned).max()) > sign + limit
        or int(features.view(signed).max()) > limit
    ):
        if not np.isfinite(features).all():
            raise InvalidTrackerState("gallery_features", "holds NaN or inf")
        raise InvalidTrackerState("gallery_features", "are not unit vectors (an element beyond 1)")
