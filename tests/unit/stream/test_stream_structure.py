"""The driver stays readable: a short orchestration module and no class with a sprawl of state.

Counts, per class of the stream and pipeline packages, the attributes its methods assign on
`self` plus the fields of a mutable dataclass: about 15 at most (issue 14), so that a
partition's position, a batch or a sink lives in a piece of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "ray_deepsort"
MAX_MUTABLE_FIELDS = 15
# Records, not pieces: a config section's settings and the run's counters have no behaviour
# that reads or moves them, so their length says nothing about how hard they are to follow.
RECORDS = {"stream/config.py:KafkaConfig", "stream/summary.py:JobSummary"}
MAX_DRIVER_LINES = 450


def _is_mutable_dataclass(node: ast.ClassDef) -> bool:
    for decorator in node.decorator_list:
        name = decorator.func if isinstance(decorator, ast.Call) else decorator
        if getattr(name, "id", getattr(name, "attr", "")) != "dataclass":
            continue
        if isinstance(decorator, ast.Call):
            return not any(
                k.arg == "frozen" and getattr(k.value, "value", False) for k in decorator.keywords
            )
        return True
    return False


def mutable_fields(node: ast.ClassDef) -> set[str]:
    """Attributes assigned on `self` in the class's methods, and mutable dataclass fields."""
    fields: set[str] = set()
    if _is_mutable_dataclass(node):
        fields |= {
            item.target.id
            for item in node.body
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
        }
    for item in ast.walk(node):
        targets: list[ast.expr] = []
        if isinstance(item, ast.Assign):
            targets = item.targets
        elif isinstance(item, ast.AnnAssign | ast.AugAssign):
            targets = [item.target]
        for target in targets:
            for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                if (
                    isinstance(element, ast.Attribute)
                    and isinstance(element.value, ast.Name)
                    and element.value.id == "self"
                ):
                    fields.add(element.attr)
    return fields


def _classes() -> list[tuple[str, ast.ClassDef]]:
    found = []
    for package in ("stream", "pipeline"):
        for path in sorted((PACKAGE / package).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found += [
                (f"{package}/{path.name}:{node.name}", node)
                for node in ast.walk(tree)
                if isinstance(node, ast.ClassDef)
            ]
    return found


PIECES = [(name, node) for name, node in _classes() if name not in RECORDS]


def test_the_records_exempted_exist() -> None:
    assert {name for name, _ in _classes()} >= RECORDS


@pytest.mark.parametrize(("name", "node"), PIECES, ids=[name for name, _ in PIECES])
def test_no_class_holds_more_than_about_15_mutable_fields(name: str, node: ast.ClassDef) -> None:
    fields = mutable_fields(node)
    assert len(fields) <= MAX_MUTABLE_FIELDS, f"{name}: {len(fields)} fields {sorted(fields)}"


def test_the_counter_sees_assignments_on_self_and_dataclass_fields() -> None:
    tree = ast.parse(
        "@dataclass\nclass A:\n    x: int = 0\n"
        "    def f(self):\n        self.y = 1\n        self.a, self.b = 1, 2\n        self.x += 1\n"
        "@dataclass(frozen=True)\nclass B:\n    x: int = 0\n"
    )
    first, second = (node for node in tree.body if isinstance(node, ast.ClassDef))
    assert mutable_fields(first) == {"x", "y", "a", "b"}
    assert mutable_fields(second) == set()


def test_the_driver_only_orchestrates_in_a_short_module() -> None:
    lines = (PACKAGE / "stream" / "job.py").read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_DRIVER_LINES
