"""The user documents point where they say: every relative markdown link of the README, docs/, bench/RESULTS.md and
bench/results/ names a file that exists, and its #anchor a heading of that file (GitHub's slugs: lower case,
punctuation dropped, spaces to '-', -N for a repeat). A section moved or renamed breaks a link here, not for a user."""

from __future__ import annotations

import re
from pathlib import Path

from imagery.repo import REPO_ROOT

LINK = re.compile(r"\[(?:[^\]]|\n)*?\]\(([^)\s]+)\)")
FENCE = "```"


def documents() -> list[Path]:
    return [
        REPO_ROOT / "README.md",
        *sorted((REPO_ROOT / "docs").glob("*.md")),
        *sorted((REPO_ROOT / "bench").glob("*.md")),
        *sorted((REPO_ROOT / "bench" / "results").glob("*.md")),
    ]


def prose(text: str, inline_code: bool = False) -> str:
    """TEXT without its fenced code blocks; without its inline code too (emptied unless it holds a link) unless
    INLINE_CODE (a heading's inline code is part of its slug)."""
    lines, fenced = [], False
    for line in text.split("\n"):
        if line.lstrip().startswith(FENCE):
            fenced = not fenced
            lines.append("")
        elif fenced:
            lines.append("")
        else:
            lines.append(
                line if inline_code else re.sub(r"`[^`]*`", lambda m: m.group(0) if "](" in m.group(0) else "``", line)
            )
    return "\n".join(lines)


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for line in prose(path.read_text(), inline_code=True).splitlines():
        if heading := re.match(r"^#{1,6} (.*)$", line):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            repeat = seen.get(slug, 0)
            seen[slug] = repeat + 1
            found.add(slug if repeat == 0 else f"{slug}-{repeat}")
    return found


def test_every_relative_link_of_the_documents_resolves():
    broken, checked = [], 0
    for document in documents():
        for match in LINK.finditer(prose(document.read_text())):
            target = match.group(1)
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            checked += 1
            path, _, fragment = target.partition("#")
            dest = (document.parent / path).resolve() if path else document
            if not dest.exists():
                broken.append(f"{document.relative_to(REPO_ROOT)}: {target}: no such file")
            elif fragment and (dest.is_dir() or fragment not in anchors(dest)):
                broken.append(f"{document.relative_to(REPO_ROOT)}: {target}: no such heading")
    assert checked > 50 and broken == []
