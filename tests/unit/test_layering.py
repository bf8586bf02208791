"""The package's dependency arrows (docs/architecture.md), checked on every import statement.

Lazy imports inside functions count too: a layer that reaches the wrong way "only at run time"
still couples the two.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "ray_deepsort"

# package -> the ray_deepsort packages it may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "io": {"core"},
    "reid": {"core"},
    "synthetic": {"core", "io"},
    "pipeline": {"core", "io", "reid"},
    "eval": {"core", "io", "pipeline", "reid", "flags"},
    "stream": {"core", "io", "pipeline", "reid", "synthetic"},
    "archive": {"core", "io", "pipeline", "reid", "synthetic", "flags"},
    "flags": {"core"},
}


def _imports(path: Path) -> set[str]:
    """Top-level ray_deepsort packages a module imports (module and function level)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "ray_deepsort" and len(parts) > 1:
                found.add(parts[1])
    return found


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _package(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    package = _package(path)
    if package not in ALLOWED:
        return  # entry points (cli, demo, __init__) may import anything
    wrong = _imports(path) - ALLOWED[package] - {package}
    assert not wrong, f"{path.relative_to(PACKAGE)} ({package}) imports {sorted(wrong)}"


# Signs of parsing a file format: each belongs to ray_deepsort/io.
FILE_PARSING = {
    "text rows (np.loadtxt / genfromtxt)": re.compile(r"np\.(loadtxt|genfromtxt)\("),
    "seqinfo.ini (configparser read)": re.compile(r"\.read\([^)]*seqinfo|parser\.read\("),
    "video decoding (cv2.VideoCapture)": re.compile(r"cv2\.VideoCapture\("),
    "CSV / Parquet detections": re.compile(r"pacsv\.read_csv\(|pq\.read_table\([^)]*det"),
    "MOTChallenge det/gt paths": re.compile(r"[\"']det\.txt[\"']|[\"']gt\.txt[\"']"),
}


def test_only_io_parses_input_files() -> None:
    offenders = []
    for path in _modules():
        if _package(path) == "io":
            continue
        text = path.read_text()
        for what, pattern in FILE_PARSING.items():
            if pattern.search(text):
                offenders.append(f"{path.relative_to(PACKAGE)}: {what}")
    assert not offenders, offenders


def test_the_architecture_page_names_every_package() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    for package in ALLOWED:
        if (PACKAGE / package).is_dir():
            assert f"`ray_deepsort/{package}`" in page, package


TESTS = PACKAGE.parent / "tests"


def test_unit_tests_mirror_the_package_layout() -> None:
    """tests/unit/<package>/ for each package (and benchmarks/); only this file at the top."""
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    for entry in (TESTS / "unit").iterdir():
        if entry.is_dir() and entry.name != "__pycache__":
            assert entry.name in packages | {"benchmarks"}, entry
        elif entry.suffix == ".py":
            assert entry.name == "test_layering.py", f"{entry} belongs in a package folder"


def test_no_test_calls_a_private_method() -> None:
    """Tests go through public interfaces; a test's own helpers (self._x) are its business."""
    private_call = re.compile(r"(?<![\w.])(?!self\.|cls\.)\w[\w.]*\._[a-z]\w*\(")
    offenders = [
        f"{path.relative_to(TESTS)}:{number}: {line.strip()}"
        for path in sorted(TESTS.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if private_call.search(line)
    ]
    assert not offenders, offenders
