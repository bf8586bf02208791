"""The tracker's parameters, read from `DeepSORTTracker.__init__` and its docstring.

One table for every surface that sets them: the stream TOML `[tracker]`, `reprocess --tracker
KEY=VALUE`, `demo --tracker KEY=VALUE` and `eval --KEY-NAME`. A parameter added to the signature
(and documented under Args) appears everywhere with the same name; an unknown name is an error
that lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

from ray_deepsort.core.tracker import DeepSORTTracker

# Set by the caller's model or hardware, not by configuration.
NOT_PARAMETERS = frozenset({"self", "reid_model", "device"})
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_UNSET = {"none", "null", "default", ""}


@dataclasses.dataclass(frozen=True)
class TrackerParameter:
    """One keyword of `DeepSORTTracker`: its type, default and documented meaning."""

    name: str
    kind: type  # bool, int, float or str
    default: Any
    optional: bool  # None is accepted: the tracker picks the value
    choices: tuple[str, ...]
    help: str

    @property
    def summary(self) -> str:
        """The documentation's first sentence (for `--help`)."""
        return re.split(r"(?<=\.)\s+(?=[A-Z])|;\s", self.help, maxsplit=1)[0].rstrip(".")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def coerce(self, value: Any) -> Any:
        """`value` (from TOML, JSON or a command-line string) as this parameter's type.

        Ints are accepted for floats; strings are parsed; anything else raises ValueError
        naming the parameter.
        """
        if isinstance(value, str):
            return self._parse(value.strip())
        if value is None and self.optional:
            return None
        if self.kind is bool and isinstance(value, bool):
            return value
        if self.kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if self.kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"tracker parameter {self.name} must be {self._expected()}: {value!r}")

    def _parse(self, text: str) -> Any:
        if self.optional and text.lower() in _UNSET:
            return None
        try:
            if self.kind is bool:
                if text.lower() in _TRUE | _FALSE:
                    return text.lower() in _TRUE
                raise ValueError
            if self.kind is int:
                return int(text)
            if self.kind is float:
                return float(text)
        except ValueError:
            raise ValueError(
                f"tracker parameter {self.name} must be {self._expected()}: {text!r}"
            ) from None
        if self.choices and text not in self.choices:
            raise ValueError(f"tracker parameter {self.name} must be {self._expected()}: {text!r}")
        return text

    def _expected(self) -> str:
        if self.choices:
            expected = " or ".join(repr(c) for c in self.choices)
        else:
            expected = {bool: "true or false", int: "an integer", float: "a number"}.get(
                self.kind, "a string"
            )
        return expected + (" (or none: the tracker's choice)" if self.optional else "")


def _kind(annotation: Any) -> tuple[type, bool, tuple[str, ...]]:
    """(base type, None allowed, choices) of an annotation such as `float | None` or a Literal."""
    args = typing.get_args(annotation)
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        optional = type(None) in args
        (annotation,) = [a for a in args if a is not type(None)]
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return str, optional, tuple(str(a) for a in args)
    if annotation not in (bool, int, float, str):
        raise TypeError(f"tracker parameter type {annotation!r} has no config form")
    return annotation, optional, ()


def _documented(docstring: str) -> dict[str, str]:
    """`name: text` entries of a Google-style Args section (continuation lines joined)."""
    section = docstring.split("Args:", 1)[1]
    entries: dict[str, str] = {}
    name = ""
    for line in section.splitlines()[1:]:
        match = re.match(r"^ {8}(\w+): (.*)$", line)
        if match:
            name = match.group(1)
            entries[name] = match.group(2)
        elif line.startswith(" " * 12) and name:
            entries[name] += " " + line.strip()
        elif line.strip():
            break
    return entries


@functools.cache
def tracker_parameters() -> dict[str, TrackerParameter]:
    """Every configurable `DeepSORTTracker` keyword, in signature order."""
    signature = inspect.signature(DeepSORTTracker.__init__)
    hints = typing.get_type_hints(DeepSORTTracker.__init__)
    documented = _documented(DeepSORTTracker.__doc__ or "")
    table = {}
    for name, parameter in signature.parameters.items():
        if name in NOT_PARAMETERS:
            continue
        if name not in documented:
            raise TypeError(f"DeepSORTTracker parameter {name} is missing from its docstring")
        kind, optional, choices = _kind(hints[name])
        table[name] = TrackerParameter(
            name, kind, parameter.default, optional, choices, documented[name]
        )
    return table


def tracker_parameter(name: str) -> TrackerParameter:
    """The parameter called `name`; ValueError listing the valid names otherwise."""
    table = tracker_parameters()
    if name not in table:
        raise ValueError(f"unknown tracker parameter {name!r}; valid: {', '.join(table)}")
    return table[name]


def tracker_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` checked and coerced to `DeepSORTTracker` keywords (unset ones left out)."""
    return {name: tracker_parameter(name).coerce(value) for name, value in values.items()}


def parse_assignment(text: str) -> tuple[str, Any]:
    """`NAME=VALUE` (a `--tracker` argument) as a checked (name, value) pair."""
    name, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"expected NAME=VALUE, got {text!r}")
    parameter = tracker_parameter(name.strip())
    return parameter.name, parameter.coerce(value)


def _config_class() -> type:
    """A dataclass with one field per parameter and the signature's defaults."""
    fields = []
    for parameter in tracker_parameters().values():
        annotation: Any = parameter.kind | None if parameter.optional else parameter.kind
        fields.append((parameter.name, annotation, dataclasses.field(default=parameter.default)))

    def params(self: Any) -> dict[str, Any]:
        """Keyword arguments for `DeepSORTTracker` (defaults keep their `DefaultFloat` mark)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    return dataclasses.make_dataclass(
        "TrackerConfig",
        fields,
        namespace={"params": params, "__module__": __name__},
    )


TrackerConfig = _config_class()
TrackerConfig.__doc__ = "`DeepSORTTracker` settings (the stream TOML's [tracker] table)."
