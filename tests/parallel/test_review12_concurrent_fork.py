"""Review 12: two forks of one checkpoint at once (two clients): each makes all its tasks or none."""

import threading

from armor_rx import Armor


def test_two_counted_forks_at_once_do_not_leave_one_half_made(repo):
    with Armor(repo) as armor:
        armor.create_task("solve")
        armor.start("solve")
        (armor.worktree("solve") / "plan.txt").write_text("the plan\n")
        cp = armor.checkpoint("solve", "plan").payload["checkpoint"]
        results: dict[int, object] = {}
        go = threading.Barrier(2)

        def fork(i: int) -> None:
            go.wait()
            try:
                results[i] = [e.task_id for e in armor.fork("solve", cp, into=4)]
            except Exception as exc:  # noqa: BLE001 - checked below
                results[i] = exc

        threads = [threading.Thread(target=fork, args=(i,)) for i in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        made = sorted(t.task_id for t in armor.tasks() if t.task_id != "solve")
        forked = sorted(n for r in results.values() if isinstance(r, list) for n in r)
        # Every task made belongs to a fork that returned it: none is left over from a fork that failed half-way.
        assert made == forked, (results, made)
