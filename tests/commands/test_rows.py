"""The listing verbs' shared printing: --json gives one document, else a line a row or one saying there are none."""

from __future__ import annotations

import argparse

import orjson

from armor_rx.commands._rows import add_json_option, print_json, print_rows


def _line(row: dict[str, object]) -> str:
    return f"{row['id']}: {row['what']}"


ROWS = [{"id": 1, "what": "a"}, {"id": 2, "what": "b"}]


def test_rows_print_a_line_each(capfd):
    assert print_rows(ROWS, as_json=False, line=_line, empty="nothing") == 0
    assert capfd.readouterr().out == "1: a\n2: b\n"


def test_no_rows_print_the_empty_line_and_json_an_empty_array(capfd):
    print_rows([], as_json=False, line=_line, empty="no conflicts between active tasks")
    assert capfd.readouterr().out == "no conflicts between active tasks\n"
    print_rows([], as_json=True, line=_line, empty="unused")
    assert capfd.readouterr().out == "[]\n"


def test_json_is_one_array_of_the_rows_or_of_what_stands_for_them(capfd):
    print_rows(ROWS, as_json=True, line=_line, empty="nothing")
    assert orjson.loads(capfd.readouterr().out) == ROWS
    print_rows(ROWS, as_json=True, line=_line, empty="nothing", json_rows=[r["id"] for r in ROWS])
    out = capfd.readouterr().out
    assert out.count("\n") == 1 and orjson.loads(out) == [1, 2]


def test_print_json_is_one_line(capfd):
    print_json({"hits": 1, "entries": [{"tag": "x"}]})
    out = capfd.readouterr().out
    assert out.endswith("\n") and out.count("\n") == 1 and orjson.loads(out)["hits"] == 1


def test_the_json_option_is_off_unless_given_and_says_what_it_prints():
    parser = argparse.ArgumentParser()
    add_json_option(parser, "the comparison as one JSON object")
    assert parser.parse_args([]).json is False and parser.parse_args(["--json"]).json is True
    assert "the comparison as one JSON object" in parser.format_help()
