"""Every design-note citation in the code and docs points at a real heading of a page in docs/."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# `docs/model.md, "Item schema"` in code; `[text](llava.md#the-tower-contract)` between the pages.
QUOTED = re.compile(r'docs/([\w.]+\.md), "([^"]+)"')
ANCHORED = re.compile(r'(?:docs/|\]\()([\w.]+\.md)#([\w-]+)')
# The reference sheets the code was written from are not in the repository: no citation may point at them.
SHEETS = re.compile(r"(?<![/\w])(fgclip|fgclip2|llava|lmms_eval|env)\.md\b|§")


def sources() -> list[Path]:
    files = [*ROOT.glob("fgclip_lmm/**/*.py"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("tests/*.py"),
             *ROOT.glob("train_*/**/*.py"), *ROOT.glob("eval/**/*.sh"), *ROOT.glob("**/README.md"), *DOCS.glob("*.md")]
    return sorted(p for p in files if ".venv" not in p.parts and p.name != Path(__file__).name)


def headings(page: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")}


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_every_citation_names_an_existing_heading() -> None:
    pages = {p.name: headings(p) for p in DOCS.glob("*.md")}
    assert {"architecture.md", "model.md", "fgclip2.md", "llava.md", "lmms_eval.md"} <= set(pages)
    cited, broken = 0, []
    for path in sources():
        text = re.sub(r"\s+", " ", path.read_text())  # a heading may wrap inside a docstring
        for page, heading in QUOTED.findall(text):
            cited += 1
            if heading not in pages.get(page, set()):
                broken.append(f'{path.relative_to(ROOT)}: {page}, "{heading}"')
        for page, anchor in ANCHORED.findall(text):
            cited += 1
            if anchor not in {slug(h) for h in pages.get(page, set())}:
                broken.append(f"{path.relative_to(ROOT)}: {page}#{anchor}")
    assert cited >= 25 and not broken, broken


def test_no_citation_of_a_sheet_outside_the_repository() -> None:
    stale = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources() if p.parent != DOCS
             for m in SHEETS.finditer(p.read_text())]
    assert not stale, stale
