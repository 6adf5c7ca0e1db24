"""The merge modes the docs name are the ones the code accepts (``MERGE_MODES``), in every list that names them all."""

import re
from pathlib import Path

from armor_rx.model.merge import MERGE_MODES

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _modes_in(text: str) -> list[str]:
    return [m for m in re.findall(r"[a-z]+(?:-[a-z]+)?", text) if m in MERGE_MODES]


def test_the_merge_strategies_table_has_one_row_per_mode():
    text = (DOCS / "git.md").read_text()
    section = text.split("## Merge strategies", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    named = [m for row in rows for m in re.findall(r"`([a-z-]+)`", row.split("|")[1])]
    assert sorted(named) == sorted(MERGE_MODES)


def test_every_list_of_merge_modes_in_the_docs_is_complete():
    # A paragraph, bullet or table row naming three or more modes is a list of them; it must name them all (no old,
    # shorter list left). 'none' and 'merge' are ordinary words too: only the rarer names count towards three.
    for path in sorted(DOCS.glob("*.md")):
        for block in re.split(r"\n\s*\n|\n(?=\s*[-*|] )", path.read_text()):
            found = set(_modes_in(block)) - {"none", "merge"}
            if len(found) >= 3:
                assert set(_modes_in(block)) == set(MERGE_MODES), f"{path.name}: {sorted(found)} in {block!r}"
