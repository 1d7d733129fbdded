"""The deviations table (course_lib.deviations): every row says why and where, and names a test that exists."""
import re
from pathlib import Path

from course_lib.deviations import METHOD_MODULES, markdown_table, official_deviations

TESTS = Path(__file__).parent


def test_every_deviation_has_a_reason_a_source_and_a_real_test():
    rows = official_deviations()
    for row in rows:
        assert row["method"] in METHOD_MODULES
        for key in ("setting", "ours", "official", "why", "source"):
            assert row[key].strip(), (row, key)
        if row["test"] is not None:
            path, _, name = row["test"].partition("::")
            test_file = TESTS.parent / path
            assert test_file.is_file(), row["test"]
            assert re.search(rf"^def {re.escape(name)}\(", test_file.read_text(), re.M), row["test"]
    settings = [(row["method"], row["setting"]) for row in rows]
    assert len(settings) == len(set(settings)), "a setting is listed twice"


def test_markdown_table_has_one_line_per_deviation_and_escapes_pipes():
    rows = [{"method": "STEGO", "setting": "a|b", "ours": "1", "official": "2", "why": "w", "source": "s",
             "test": None}]
    table = markdown_table(rows).splitlines()
    assert len(table) == 3 and "a\\|b" in table[2]
    assert len(markdown_table().splitlines()) == 2 + len(official_deviations())


def test_readme_carries_the_current_table():
    readme = (TESTS.parent / "README.md").read_text()
    assert markdown_table() in readme, "README is stale: paste `python -m course_lib.deviations` into it"
