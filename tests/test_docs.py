"""The README and docs/ render: every table whole (a header, its separator row, and rows of the
same width), every code fence a line of its own, and every link to a file of the repository
or a heading of a page that exists."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _cells(row: str) -> int:
    """The cells of a Markdown table row; a ``|`` inside backticks is text."""
    return len(re.sub(r"`[^`]*`", "code", row.strip()).strip("|").split("|"))


def _tables(text: str):
    fenced, run = False, []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("|"):
            run.append((number, line))
            continue
        if run:
            yield run
        run = []
    if run:
        yield run


def test_every_code_fence_is_a_line_of_its_own():
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            if "```" in line:
                assert re.fullmatch(r"```[a-z]*", line), f"{page.name}:{number}: text on a fence line: {line!r}"


def test_every_readme_table_has_a_header_a_separator_and_rows_of_its_width():
    tables = [rows for page in PAGES for rows in _tables(page.read_text())]
    assert len(tables) >= 10
    for rows in tables:
        (first, header), *rest = rows
        assert rest and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", rest[0][1].strip()), \
            f"line {first}: a table without its separator row (split by a blank line?)"
        width = _cells(header)
        for number, row in rest:
            assert _cells(row) == width, f"line {number}: {_cells(row)} cells where the header has {width}"


def test_the_check_finds_a_split_table():
    split = "| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n"
    tables = list(_tables(split))
    assert len(tables) == 2 and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", tables[1][0][1])


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_reaches_a_file_and_a_heading_that_exist():
    headings = {page.resolve(): {_anchor(line.lstrip("#")) for line in page.read_text().splitlines()
                                 if re.match(r"#{1,6} ", line)} for page in PAGES}
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page.resolve()
            assert file.exists(), f"{page.name}: a link to {target}, which does not exist"
            if anchor and file in headings:
                assert anchor in headings[file], f"{page.name}: a link to #{anchor}, no such heading in {file.name}"
