"""The examples in the operators' docstrings run and say what they show."""

from __future__ import annotations

import doctest

import armor_rx.operators


def test_docstring_examples():
    result = doctest.testmod(armor_rx.operators, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8  # one example per exported operator at least
    assert result.failed == 0
