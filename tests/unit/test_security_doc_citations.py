"""Every heading of docs/security.md that the code cites exists, and every test the document names
exists: the threat model and the code stay in step."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
CITATION = re.compile(r'docs/security\.md ((?:"[^"]+")(?:, "[^"]+")*)')


def _headings() -> set[str]:
    return {
        line.removeprefix("### ").strip()
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("### ") or line.startswith("## ")
    } | {
        line.removeprefix("## ").strip()
        for line in DOC.read_text(encoding="utf-8").splitlines()
        if line.startswith("## ")
    }


def _python_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    return [ROOT / name for name in listed]


def _cited(text: str) -> list[str]:
    # A citation may wrap over lines of a comment or a docstring: fold them first.
    folded = re.sub(r"\s*\n\s*(?:#\s*)?", " ", text)
    return [
        name
        for match in CITATION.finditer(folded)
        for name in re.findall(r'"([^"]+)"', match.group(1))
    ]


def test_every_citation_in_the_code_names_a_heading_of_docs_security_md() -> None:
    headings = _headings()
    unknown = {
        (path.relative_to(ROOT).as_posix(), name)
        for path in _python_files()
        for name in _cited(path.read_text(encoding="utf-8"))
        if name not in headings
    }
    assert unknown == set()


def test_the_code_cites_the_document_in_the_repository_not_one_outside_it() -> None:
    outside = [
        path.relative_to(ROOT).as_posix()
        for path in _python_files()
        if re.search(r"SECURITY\.md \d", path.read_text(encoding="utf-8"))
    ]
    assert outside == []


def test_every_test_the_document_names_exists() -> None:
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)", DOC.read_text(encoding="utf-8"))
    assert len(named) > 50
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not re.search(
            rf"^(async )?def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.MULTILINE
        )
    ]
    assert missing == []
