"""The docs hold together: every relative link resolves, and the README stays short and opens
with the two commands CI runs (``.ci/run`` runs the second one verbatim)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_BYTES = 10_240
RUN_EXAMPLE = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "
    "python examples/food_order/main.py"
)
RUN_TESTS = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && "
    "python -m pytest -q"
)

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def links(path: Path) -> list[str]:
    """Targets of the markdown links in ``path``, outside code blocks and inline code."""
    text = INLINE_CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return LINK.findall(text)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of ``path``."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    out = set()
    for title in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", title.replace("`", "").lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_the_docs_exist() -> None:
    names = {p.name for p in DOCS if p.is_file()}
    assert {
        "README.md",
        "CHANGELOG.md",
        "concepts.md",
        "api.md",
        "sql.md",
        "cli.md",
        "cluster.md",
        "guarantees.md",
        "architecture.md",
        "performance.md",
        "security.md",
    } <= names


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in links(doc):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked here (no network in tests)
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{doc.name}: " + "; ".join(broken)


def test_readme_is_short() -> None:
    assert len(README.read_bytes()) <= README_MAX_BYTES


def test_readme_starts_with_the_two_commands() -> None:
    lines = [line for line in README.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert lines[0].startswith("# ")
    assert lines[1] == "```bash"
    block = lines[2 : lines.index("```", 2)]
    commands = [line for line in block if not line.lstrip().startswith("#")]
    assert commands == [RUN_EXAMPLE, RUN_TESTS]


def test_ci_runs_the_readmes_test_command() -> None:
    assert RUN_TESTS in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_readme_cites_no_missing_design_file() -> None:
    text = README.read_text(encoding="utf-8")
    assert "DESIGN.md" not in text or (ROOT / "DESIGN.md").exists()
