"""The lists in conftest.py that split and order the suite name tests and files that exist."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ALONE, SERIAL, SLOW_FIRST, is_serial

TESTS = Path(__file__).resolve().parent


def functions_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.name.startswith("test_")
    }


def assert_names_a_test(entry: str) -> None:
    """``entry`` is a test file, or ``file::test`` with that test in it."""
    file, _, name = entry.partition("::")
    assert (TESTS / file).is_file(), entry
    if name:
        assert name in functions_in(TESTS / file), entry


def test_every_serial_entry_names_a_test_file_or_a_test_in_it() -> None:
    for entry in SERIAL:
        assert_names_a_test(entry)


def test_every_alone_entry_is_a_serial_test_that_exists() -> None:
    for entry in ALONE:
        assert_names_a_test(entry)
        assert is_serial(f"tests/{entry}"), entry


def test_every_slow_first_entry_names_a_test_file() -> None:
    assert all((TESTS / name).is_file() for name in SLOW_FIRST)
    assert len(set(SLOW_FIRST)) == len(SLOW_FIRST)


def test_a_serial_entry_marks_its_parametrized_cases_and_a_file_all_its_tests() -> None:
    test = "tests/test_pipeline.py::test_lone_request_waits_at_most_max_delay"
    assert is_serial(test)
    assert is_serial("tests/test_limiter.py::test_no_rise_without_demand[x]")
    assert not is_serial("tests/test_pipeline.py::test_stream_of_dicts_is_ndjson")
    assert not is_serial("tests/test_pipeline.py::test_lone_request_waits_at_most_max_delay_x")
