"""What imports what outside src/ (import-linter's contracts in pyproject.toml cover src/ only): the
product — src/, the stage scripts, bench/ and scripts/ — never imports the tests, and the library
(src/ and the stages) never imports the benchmarks or the scripts."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported(path: Path) -> set[str]:
    """Every module a file imports (top level, in functions, under TYPE_CHECKING)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def offenders(files: list[Path], packages: tuple[str, ...]) -> list[str]:
    return [
        f"{f.relative_to(ROOT)} imports {m}"
        for f in files
        for m in sorted(imported(f))
        if m.split(".")[0] in packages
    ]


LIBRARY = [*sorted(ROOT.glob("*.py")), *sorted((ROOT / "src").rglob("*.py"))]
TOOLS = [*sorted((ROOT / "bench").rglob("*.py")), *sorted((ROOT / "scripts").rglob("*.py"))]


def test_the_product_never_imports_the_tests():
    assert len(LIBRARY) > 50 and len(TOOLS) > 10  # the globs found the trees
    assert offenders([*LIBRARY, *TOOLS], ("tests",)) == []


def test_the_library_never_imports_the_benchmarks_or_the_scripts():
    assert offenders(LIBRARY, ("bench", "scripts")) == []
