"""The docs point at things that exist: links within the repository and their anchors, the test files they
tell people to run (issue 23: moved test paths, a dead anchor, a file outside the repository)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.servers import ROOT

DOCS = [
    ROOT / "README.md",
    ROOT / "CHANGELOG.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "mysql_proxy_lua" / "README.md",
]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M):
        text = re.sub(r"[`*_]|\[|\]\([^)]*\)", "", heading).strip().lower()
        found.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_within_the_repository_lead_somewhere(doc: Path):
    text = doc.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: outside the repository by design
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
        assert file.exists(), f"{doc.name}: {target} does not exist"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file.read_text(encoding="utf-8")), f"{doc.name}: no heading for {target}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_paths_the_docs_name_exist(doc: Path):
    text = doc.read_text(encoding="utf-8")
    if doc.name == "CHANGELOG.md":
        return  # history: it names what was, by design
    for path in re.findall(
        r"(?<![\w/.])((?:tests|docs|benchmarks|bin|example|instrumented|mysql_proxy_lua)/[\w./*-]+)", text
    ):
        path = path.rstrip(".")
        # A template or static file name (instrumented/500.html) is found under the app's templates/ or static/.
        roots = [ROOT, ROOT / "instrumented" / "templates", ROOT / "instrumented" / "static"]
        matches = [m for r in roots for m in (list(r.glob(path)) if "*" in path else [r / path])]
        assert any(m.exists() for m in matches), f"{doc.name} names {path}, which does not exist"
    assert "reference/mysql-proxy-api.md" not in text, f"{doc.name} names a file outside the repository"
