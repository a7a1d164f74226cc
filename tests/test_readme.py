"""README.md's relative links and images point at files that exist in the repository."""

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

# Run on one backend: links in a Markdown file do not depend on the backend.
pytestmark = pytest.mark.once

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Inline links and images: [text](target) and ![alt](target), with an optional "title" or <target>.
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
# Reference definitions: [label]: target
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)", re.MULTILINE)
# HTML images and anchors, as GitHub renders them: <img src="..."> and <a href="...">.
_HTML = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
_EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", re.IGNORECASE)  # http:, https:, mailto:, //host, #anchor


def relative_links(markdown):
    """Every relative link target of ``markdown`` (fragment and query removed), outside code.

    Fenced code blocks and inline code spans are dropped first: ``a[i](x)`` in code is not a link.
    """
    text = re.sub(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*\s*$", "", markdown, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"(`+).+?\1", "", text, flags=re.DOTALL)
    targets = _INLINE.findall(text) + _REFERENCE.findall(text) + _HTML.findall(text)
    links = []
    for target in targets:
        target = target.strip("<>").strip()
        if not target or _EXTERNAL.match(target):
            continue
        path = unquote(re.split(r"[#?]", target, maxsplit=1)[0])
        if path:
            links.append(path)
    return links


def broken_links(markdown, base=ROOT):
    """The relative links of ``markdown`` (a file in folder ``base``) that name nothing, or a path git ignores."""
    broken = []
    for link in relative_links(markdown):
        target = ROOT / link.lstrip("/") if link.startswith("/") else base / link
        if not target.exists():
            broken.append(f"{link} (no such file)")
        elif _ignored(target):
            broken.append(f"{link} (ignored by git: never in the repository)")
    return broken


def _ignored(path):
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(path)], capture_output=True)
    except OSError:  # no git: existence is all that can be checked
        return False
    return done.returncode == 0


def test_the_link_finder_reads_markdown_like_github():
    text = "\n".join([
        "![a figure](docs/a.png) and [results](benchmarks/results.md#table-2 \"title\")",
        "[web](https://example.org/x.png) [mail](mailto:a@b.c) [here](#usage) [spaced](<docs/my file.png>)",
        "[nested [brackets]](docs/b.md) [encoded](docs/my%20file.png?raw=true)",
        "`not[a](link)` and <img src=\"docs/c.png\" width=\"40\">",
        "```python",
        "x = table[i](y)",
        "```",
        "[ref]: docs/d.png",
    ])
    assert relative_links(text) == ["docs/a.png", "benchmarks/results.md", "docs/my file.png", "docs/b.md",
                                    "docs/my file.png", "docs/d.png", "docs/c.png"]


def test_every_relative_link_in_the_readme_resolves():
    if not README.exists():
        pytest.skip("no README.md")
    text = README.read_text(encoding="utf-8")
    assert relative_links(text), "README.md has no relative links: is the link finder broken?"
    broken = broken_links(text, base=README.parent)
    assert not broken, "README.md links to missing files:\n" + "\n".join(broken)


def test_a_missing_file_a_misspelt_folder_and_an_ignored_path_are_reported():
    text = "![gone](docs/no-such-figure.png) [typo](benchmark/results.md#x) [venv](.venv/) [ok](README.md)"
    broken = broken_links(text)
    assert broken[:2] == ["docs/no-such-figure.png (no such file)", "benchmark/results.md (no such file)"], broken
    # .venv/ exists where tests run from a checkout (git ignores it), or not at all.
    assert broken[2:] in ([".venv/ (ignored by git: never in the repository)"], [".venv/ (no such file)"]), broken
