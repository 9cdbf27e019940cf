"""The README renders: every table whole (a header, its separator row, and rows of the same width)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    for number, line in enumerate((ROOT / "README.md").read_text().splitlines(), start=1):
        if "```" in line:
            assert re.fullmatch(r"```[a-z]*", line), f"README.md:{number}: text on a fence line: {line!r}"


def test_every_readme_table_has_a_header_a_separator_and_rows_of_its_width():
    tables = list(_tables((ROOT / "README.md").read_text()))
    assert len(tables) >= 10
    for rows in tables:
        (first, header), *rest = rows
        assert rest and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", rest[0][1].strip()), \
            f"README.md:{first}: a table without its separator row (split by a blank line?)"
        width = _cells(header)
        for number, row in rest:
            assert _cells(row) == width, f"README.md:{number}: {_cells(row)} cells where the header has {width}"


def test_the_check_finds_a_split_table():
    split = "| a | b |\n|---|---|\n| 1 | 2 |\n\n| 3 | 4 |\n"
    tables = list(_tables(split))
    assert len(tables) == 2 and not re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", tables[1][0][1])
