"""The pages README.md links to read as plain GitHub-flavoured Markdown.

A code host shows ``docs/*.md`` without Sphinx: a MyST role (``{doc}`...```), a directive
fence or an explicit target (``(label)=``) shows there as raw text. These pages link with
relative paths and heading anchors instead, which both a code host and MyST resolve
(``myst_heading_anchors`` in ``docs/conf.py``). The Sphinx build checks that MyST resolves
them; this file checks the code host's side: the file exists and a heading has the slug.

Definition lists (MyST's ``deflist``) are allowed: a code host shows each as a paragraph,
``term : definition``, which reads as intended.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Directives that a page keeps because what they produce cannot be written by hand. The text
# around each one tells a reader on a code host where to look instead.
ALLOWED_DIRECTIVES: dict[str, tuple[set[str], str]] = {
    "docs/index.md": (
        {"toctree"},
        "the root document's toctree builds the built docs' navigation; it sits last, after "
        "the plain links to every page",
    ),
    "docs/reference/api.md": (
        {"eval-rst"},
        "autodoc inserts each signature and docstring from the code, so that they cannot "
        "drift; the page says that they are in django_alarms/alarms.py",
    ),
    "docs/reference/settings.md": (
        {"alarms-settings"},
        "the table of every setting is generated from django_alarms.conf.OPTIONS, so that it "
        "cannot drift; the page points a code host's reader to OPTIONS",
    ),
}
# Pages that are not checked at all, each with the reason.
EXEMPT: dict[str, str] = {}

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
DIRECTIVE = re.compile(r"^\s*\{([\w:-]+)\}")
ROLE = re.compile(r"\{[a-z][\w:-]*\}`")
COLON_FENCE = re.compile(r"^ {0,3}:{3,}\s*\{")
TARGET = re.compile(r"^\([\w-]+\)=\s*$")
COMMENT = re.compile(r"^%( |$)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
AUTODOC = re.compile(r"^(\.\. (auto\w+|currentmodule):: \S.*| {3}:[\w-]+:.*)?$")
ANCHOR_LEVELS = int(
    re.search(r"^myst_heading_anchors = (\d+)", (ROOT / "docs" / "conf.py").read_text(), re.M)[1]
)


@dataclass
class Page:
    """A Markdown file split into its prose lines and its directive fences (```{name})."""

    prose: list[tuple[int, str]] = field(default_factory=list)
    directives: list[tuple[int, str, list[str]]] = field(default_factory=list)


def parse(path: Path) -> Page:
    page = Page()
    fence, body = "", None
    for number, line in enumerate(path.read_text().splitlines(), 1):
        opened = FENCE.match(line)
        if fence:
            if opened and opened[1].startswith(fence) and not opened[2].strip():
                fence, body = "", None
            elif body is not None:
                body.append(line)
            continue
        if opened:
            fence = opened[1]
            directive = DIRECTIVE.match(opened[2])
            if directive:
                body = []
                page.directives.append((number, directive[1], body))
            continue
        page.prose.append((number, line))
    return page


def links(path: Path) -> list[str]:
    """The targets of the Markdown links and images of a page, outside code."""
    text = "\n".join(INLINE_CODE.sub("", line) for _, line in parse(path).prose)
    return LINK.findall(text)


def github_slugs(path: Path) -> dict[str, int]:
    """Each heading's anchor as a code host makes it (lowercase, punctuation other than - and
    _ dropped, each space a hyphen, -1, -2 after repeats), with the heading's level."""
    slugs: dict[str, int] = {}
    seen: Counter[str] = Counter()
    for _, line in parse(path).prose:
        heading = HEADING.match(line)
        if not heading:
            continue
        text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading[2])
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        unique = f"{slug}-{seen[slug]}" if seen[slug] else slug
        seen[slug] += 1
        slugs[unique] = len(heading[1])
    return slugs


def local(target: str) -> bool:
    return not re.match(r"[a-z][a-z0-9+.-]*:|//", target, re.I)


def check_links(page: Path) -> list[str]:
    problems = []
    for target in filter(local, links(page)):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / unquote(path)).resolve() if path else page
        shown = f"{page.relative_to(ROOT)}: ({target})"
        if not resolved.exists():
            problems.append(f"{shown}: no such file")
        elif anchor and resolved.suffix == ".md":
            level = github_slugs(resolved).get(anchor)
            if level is None:
                problems.append(f"{shown}: no heading of {resolved.name} has this anchor")
            elif level > ANCHOR_LEVELS:
                problems.append(
                    f"{shown}: MyST gives anchors to headings down to level "
                    f"{ANCHOR_LEVELS} only (myst_heading_anchors)"
                )
    return problems


LINKED_PAGES = sorted(
    {
        str((ROOT / unquote(target.partition("#")[0])).resolve().relative_to(ROOT))
        for target in filter(local, links(README))
        if target.startswith("docs/") and target.partition("#")[0].endswith(".md")
    }
)


def test_readme_links_to_docs_pages() -> None:
    assert "docs/index.md" in LINKED_PAGES
    assert "docs/reference/settings.md" in LINKED_PAGES


def test_every_relative_link_of_the_readme_resolves() -> None:
    assert check_links(README) == []


def test_exemptions_name_linked_pages() -> None:
    """An exemption for a page that README no longer links to is stale."""
    assert set(EXEMPT) | set(ALLOWED_DIRECTIVES) <= set(LINKED_PAGES)


@pytest.mark.parametrize("name", [page for page in LINKED_PAGES if page not in EXEMPT])
def test_linked_page_has_no_myst_syntax(name: str) -> None:
    page = parse(ROOT / name)
    allowed, _ = ALLOWED_DIRECTIVES.get(name, (set(), ""))
    problems = [
        f"{name}:{number}: ```{{{directive}}} directive"
        for number, directive, _ in page.directives
        if directive not in allowed
    ]
    for number, line in page.prose:
        for pattern, what in (
            (ROLE, "role"),
            (COLON_FENCE, "colon-fence directive"),
            (TARGET, "explicit target"),
            (COMMENT, "MyST comment"),
        ):
            if pattern.search(line):
                problems.append(f"{name}:{number}: {what}: {line.strip()}")
    assert problems == []


def test_api_page_keeps_only_autodoc_in_its_rst_blocks() -> None:
    """Prose hidden in an eval-rst block would not show on a code host."""
    page = parse(ROOT / "docs" / "reference" / "api.md")
    blocks = [(number, body) for number, name, body in page.directives if name == "eval-rst"]
    assert blocks
    for number, body in blocks:
        assert [line for line in body if not AUTODOC.match(line)] == [], number


@pytest.mark.parametrize("name", [page for page in LINKED_PAGES if page not in EXEMPT])
def test_links_of_a_linked_page_resolve_on_a_code_host(name: str) -> None:
    assert check_links(ROOT / name) == []
