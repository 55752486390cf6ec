"""README.md is a short front page, docs/ the reference; every relative link and #anchor resolves."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target)
HEADING = re.compile(r"#{1,6}\s+(.+?)\s*$")


def prose(path: Path) -> list[str]:
    """The lines of a markdown file outside fenced code blocks (a `# comment` there is no heading)."""
    lines, in_code = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
        elif not in_code:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case; letters and digits of any script, `-` and `_` kept,
    every other character dropped (backticks, punctuation); each space becomes `-`."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor; a repeated one gets -1, -2, … as on GitHub."""
    found, count = set(), {}
    for line in prose(path):
        if m := HEADING.match(line):
            s = slug(m.group(1))
            found.add(f"{s}-{count[s]}" if s in count else s)
            count[s] = count.get(s, 0) + 1
    return found


def local_links(path: Path) -> list[str]:
    """Link targets that point into this repository (no http(s)://, no mailto:)."""
    targets = [t for line in prose(path) for t in LINK.findall(line)]
    return [t for t in targets if not t.startswith(("http://", "https://", "mailto:"))]


def test_slug_follows_github():
    assert slug("Your own setting: a non-default backbone, no `--run` needed") == (
        "your-own-setting-a-non-default-backbone-no---run-needed"
    )
    assert slug("Datasets and tasks (the registry, `src/tasks.py`)") == (
        "datasets-and-tasks-the-registry-srctaskspy"
    )
    assert slug("Fig 6 (λ sweep)") == "fig-6-λ-sweep"
    assert slug("A1 — prepare a dataset") == "a1--prepare-a-dataset"


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail to docs/"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_and_anchors_resolve(page):
    broken = []
    for target in local_links(page):
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor in {linked.name}")
    assert broken == []


def test_readme_links_every_docs_page():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in local_links(README)}
    assert DOCS, "docs/ holds no page"
    assert [p.name for p in DOCS if p.resolve() not in linked] == []


# a file of the repository named in a docstring, comment or page: src/<…>.py, docs/<…>.md, A1_….py
NAMED_FILE = re.compile(
    r"(?<![\w./-])((?:src|tests|bench|scripts|docs)/[\w./-]*\.(?:py|md)|[A-E][0-9]_[a-z_]+\.py)\b"
)
SCANNED = [
    *ROOT.glob("*.py"), *ROOT.glob("*.md"), ROOT / "Makefile", ROOT / "pyproject.toml",
    *(p for d in ("src", "tests", "bench", "scripts", "docs") for p in (ROOT / d).rglob("*")
      if p.suffix in (".py", ".md", ".sh", ".js", ".html")),
]  # fmt: skip


def test_every_file_named_in_the_code_and_docs_exists():
    """A docstring or page that names a moved or deleted file misleads the next reader."""
    missing = [
        f"{path.relative_to(ROOT)}:{i}: {m.group(1)}"
        for path in SCANNED
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in NAMED_FILE.finditer(line)
        if not line[: m.start()].endswith("--out ")  # a file a command would write
        and not (ROOT / m.group(1)).exists()
    ]
    assert len(SCANNED) > 150 and missing == []
