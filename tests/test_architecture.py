"""The map of docs/architecture.md holds in the code: data flows one way, the format has one owner."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# the entry points of measure/ where the analysis may be wired in: the command line and the IPython extension
MEASURE_ENTRY_POINTS = {"__main__.py", "magic.py"}
# the modules of analysis/ where the measuring side may be called: the notebooks' helper
ANALYSIS_MEETING_POINTS = {"notebook.py"}


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*parent, base]))
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("measure"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_measuring_side_never_imports_the_analysis(path):
    if path.name in MEASURE_ENTRY_POINTS:
        return
    assert not {name for name in imported(path) if name.split(".")[0] == "analysis"}


@pytest.mark.parametrize("path", modules("analysis"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_analysis_reads_the_format_and_nothing_else_of_the_measuring_side(path):
    if path.name in ANALYSIS_MEETING_POINTS:  # where a notebook measures afresh, through measure.sweep
        return
    used = {name for name in imported(path) if name.split(".")[0] == "measure"}
    assert used <= {"measure", "measure.runtree"}, used
    assert "torch" not in {name.split(".")[0] for name in imported(path)}


def test_the_format_module_imports_no_torch_numpy_or_pandas():
    roots = {name.split(".")[0] for name in imported(ROOT / "measure" / "runtree.py")}
    assert not roots & {"torch", "numpy", "pandas", "analysis"}
