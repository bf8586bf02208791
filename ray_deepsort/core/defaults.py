"""Defaults that remember they are defaults, so a model's recommendation can replace them.

A caller who writes `appearance_threshold=0.7` means 0.7; one who leaves it out means "whatever
fits". Both arrive as 0.7, so the signature default is a `DefaultFloat`: a float in every
arithmetic and repr, whose type alone says "left at default". The mark is a type, not an
identity, so it survives `copy.deepcopy`, `dataclasses.asdict` and pickling of configs.
"""

from __future__ import annotations


class DefaultFloat(float):
    """A float left at its default; behaves (and prints) exactly like the plain float."""

    __slots__ = ()

    def __repr__(self) -> str:
        return float.__repr__(self)


DEFAULT_APPEARANCE_THRESHOLD = DefaultFloat(0.7)
DEFAULT_APPEARANCE_WEIGHT = DefaultFloat(0.5)


def is_default(value: object) -> bool:
    """Whether `value` is a default the caller did not set (a `DefaultFloat`)."""
    return isinstance(value, DefaultFloat)


def resolve_default(value: float, recommended: float | None) -> float:
    """The setting to use (appearance gate or weight): the model's `recommended` one when
    `value` was left at its default, else `value`. An explicit setting always wins. Returns a
    plain float."""
    if is_default(value) and recommended is not None:
        return float(recommended)
    return float(value)
