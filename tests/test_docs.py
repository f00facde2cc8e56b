"""Every link in the repository's Markdown resolves, as GitHub would show it.

A relative link must name a file or folder in the repository (tracked, or new and not ignored:
what a push would publish); a `#anchor`, in the same file or another `.md` file, must be the
slug GitHub gives one of that file's headings (ATX `#` headings) or an explicit `<a id=…>`.
External links (http, https, mailto, any scheme) are not fetched. Links inside code are text.
"""

from __future__ import annotations

import re
import subprocess
import unicodedata
import urllib.parse
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
# A code span never crosses a blank line; a stray backtick must not swallow the rest of the file.
CODE_SPAN = re.compile(r"(`+)((?:(?!\n[ \t]*\n).)+?)\1", re.DOTALL)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^\s)]*)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:[ \t]*(<[^>]*>|\S+)", re.MULTILINE)
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger, before duplicates are numbered)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text)
    parts = re.split(r"(`+[^`]*`+)", text)
    # Outside code, emphasis marks are markup, not text; inside it every character shows.
    shown = "".join(part.strip("`") if part.startswith("`") else re.sub(r"\*+|(?<!\w)_+|_+(?!\w)", "", part)
                    for part in parts)
    kept = "".join(ch for ch in shown.strip().lower()
                   if ch in " -" or unicodedata.category(ch)[0] in "LMN" or unicodedata.category(ch) == "Pc")
    return kept.replace(" ", "-")


def without_code(text: str) -> str:
    """The text with fenced blocks and code spans blanked out, every line and offset kept."""
    lines, fence = [], None
    for line in text.split("\n"):
        opened = FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)[0] * len(opened.group(1))
            lines.append(" " * len(line))
        elif fence is not None:
            if line.strip().startswith(fence) and not line.strip().strip(fence[0]):
                fence = None
            lines.append(" " * len(line))
        else:
            lines.append(line)
    blanked = "\n".join(lines)
    return CODE_SPAN.sub(lambda m: m.group(1) + re.sub(r"[^\n]", "x", m.group(2)) + m.group(1), blanked)


def anchors(text: str) -> set[str]:
    """Every anchor GitHub makes in a Markdown file: its headings' slugs, numbered -1, -2 … when
    repeated, and explicit HTML anchors."""
    occurrences: dict[str, int] = {}
    found = set(HTML_ANCHOR.findall(text))
    prose = without_code(text).split("\n")
    for index, line in enumerate(text.split("\n")):
        heading = HEADING.match(line)
        if not heading or not HEADING.match(prose[index]):  # a "# comment" inside a code block is no heading
            continue
        original = result = slug(heading.group(1))
        while result in occurrences:  # github-slugger's numbering, which also counts the numbered ones
            occurrences[original] += 1
            result = f"{original}-{occurrences[original]}"
        occurrences[result] = 0
        found.add(result)
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every inline, image and reference-definition link outside code."""
    prose = without_code(text)
    found = [(m.start(1), m.group(1)) for m in INLINE_LINK.finditer(prose)]
    found += [(m.start(1), m.group(1)) for m in REFERENCE.finditer(prose)]
    # Offsets index the original text too: blanking keeps every character where it was.
    return sorted((text.count("\n", 0, start) + 1, text[start:start + len(target)].strip("<>"))
                  for start, target in found)


def broken_links(root: Path, published: set[str]) -> list[str]:
    """One line per broken link in the Markdown files among `published` (repo-relative POSIX paths)."""
    folders = {str(parent) for path in published for parent in PurePosixPath(path).parents}
    cache: dict[str, set[str]] = {}

    def anchors_of(path: str) -> set[str]:
        if path not in cache:
            cache[path] = anchors((root / path).read_text(encoding="utf-8"))
        return cache[path]

    problems = []
    for source in sorted(p for p in published if p.endswith(".md") and (root / p).is_file()):
        for line, target in links((root / source).read_text(encoding="utf-8")):
            where = f"{source}:{line}: ({target})"
            if SCHEME.match(target):
                continue
            if not target:
                problems.append(f"{where}: the link has no target")
                continue
            raw_path, _, fragment = target.partition("#")
            path = urllib.parse.unquote(raw_path)
            if path.startswith("/"):  # GitHub reads these from the repository's root
                resolved = PurePosixPath(path.lstrip("/"))
            else:
                resolved = PurePosixPath(source).parent / path if path else PurePosixPath(source)
            parts: list[str] = []
            for part in resolved.parts:
                if part == "..":
                    if not parts:
                        break
                    parts.pop()
                elif part != ".":
                    parts.append(part)
            else:
                name = "/".join(parts) or "."
                if name not in published and name not in folders:
                    problems.append(f"{where}: {name} is not in the repository")
                    continue
                if fragment and name.endswith(".md") and name in published:
                    anchor = urllib.parse.unquote(fragment)
                    if anchor not in anchors_of(name):
                        problems.append(f"{where}: no heading in {name} has the anchor #{anchor}")
                continue
            problems.append(f"{where}: {path} leads out of the repository")
    return problems


def published_files() -> set[str]:
    """What a push publishes: tracked files still present, and new files git does not ignore."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            capture_output=True, text=True, check=True).stdout
    return {path for path in listed.split("\0") if path and (ROOT / path).exists()}


def test_every_link_and_anchor_in_the_repositorys_markdown_resolves() -> None:
    published = published_files()
    assert "README.md" in published
    problems = broken_links(ROOT, published)
    assert not problems, f"{len(problems)} broken Markdown link(s):\n" + "\n".join(problems)


@pytest.mark.parametrize(("heading", "expected"), [
    ("Quick start", "quick-start"),
    ("What `make bench` does and how to read its results", "what-make-bench-does-and-how-to-read-its-results"),
    ("15,000 connections on one worker", "15000-connections-on-one-worker"),
    ("Why Python 3.11 on bookworm", "why-python-311-on-bookworm"),
    ("Local: kind and Tilt", "local-kind-and-tilt"),
    ("granian's `task_impl`", "granians-task_impl"),
    ("**Bold** and _emphasis_ in snake_case", "bold-and-emphasis-in-snake_case"),
    ("A [linked](docs/x.md) word", "a-linked-word"),
    ("p99 ÷ Go p99 – within 2×", "p99--go-p99--within-2"),
    ("Ünïcode stays", "ünïcode-stays"),
])
def test_slugs_are_the_ones_github_makes(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def test_repeated_headings_are_numbered_as_github_numbers_them() -> None:
    assert anchors("# Results\n## Results\n### Results\n") == {"results", "results-1", "results-2"}
    assert anchors("# A\n# A\n# A-1\n") == {"a", "a-1", "a-1-1"}
    assert anchors("## Closing hashes ##\n") == {"closing-hashes"}


def test_code_is_neither_a_heading_nor_a_link() -> None:
    text = "```sh\n# not a heading\n[x](missing.md)\n```\nSee `[y](missing.md)` and [z](#real).\n\n# Real\n"
    assert anchors(text) == {"real"}
    assert links(text) == [(5, "#real")]


def test_each_broken_link_is_one_line_naming_file_line_link_and_why(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## Two words\n")
    (tmp_path / "code.py").write_text("")
    (tmp_path / "README.md").write_text(
        "# Top\n"
        "[ok](docs/guide.md#two-words) [ok](#top) [ok](code.py#L1) [ok](docs) [ok](https://example.com/x.md)\n"
        "[gone](docs/missing.md)\n"
        "[bad anchor](docs/guide.md#two_words) and ![image](<docs/pic.png>)\n"
        "[self](#nowhere) [out](../elsewhere.md)\n"
        "[ref]: docs/guide.md#guide\n"
        "[ref2]: /docs/guide.md#none\n"
    )
    (tmp_path / "docs" / "back.md").write_text("[up](../README.md#top) [up](../README.md#gone)\n")
    published = {"README.md", "code.py", "docs/guide.md", "docs/back.md"}
    assert broken_links(tmp_path, published) == [
        "README.md:3: (docs/missing.md): docs/missing.md is not in the repository",
        "README.md:4: (docs/guide.md#two_words): no heading in docs/guide.md has the anchor #two_words",
        "README.md:4: (docs/pic.png): docs/pic.png is not in the repository",
        "README.md:5: (#nowhere): no heading in README.md has the anchor #nowhere",
        "README.md:5: (../elsewhere.md): ../elsewhere.md leads out of the repository",
        "README.md:7: (/docs/guide.md#none): no heading in docs/guide.md has the anchor #none",
        "docs/back.md:1: (../README.md#gone): no heading in README.md has the anchor #gone",
    ]
