"""Review 12: two tasks completed at the same moment with first-wins: exactly one lands, nothing half-applied."""

import threading

import pytest

from armor_rx import Armor
from armor_rx.model.events import to_plain


@pytest.mark.parametrize("round_", range(8))
def test_two_conflicting_first_wins_completions_at_once_land_exactly_one(repo, edit, git, round_):
    with Armor(repo) as armor:
        for name in ("a", "b"):
            armor.create_task(name)
            armor.start(name)
            edit(armor.worktree(name) / "app.py", 3 + 20 * (name == "b"), f"{name}'s line")
            for i in range(30):  # more to write into the checkout, so the two merges overlap
                (armor.worktree(name) / f"{name}-{i}.txt").write_text(f"{name} {i}\n" * 50)
        results: dict[str, object] = {}
        go = threading.Barrier(2)

        def complete(name: str) -> None:
            go.wait()
            try:
                results[name] = to_plain(armor.complete(name, merge="first-wins").payload)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                results[name] = exc

        threads = [threading.Thread(target=complete, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        merged = [n for n, r in results.items() if isinstance(r, dict) and r["merged"]]
        assert len(merged) == 1, results
        loser = "b" if merged == ["a"] else "a"
        assert isinstance(results[loser], dict) and results[loser]["reason"] == "conflict", results
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "show", "main:app.py") == (repo / "app.py").read_text()
    git(repo, "fsck", "--strict")
