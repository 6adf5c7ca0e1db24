"""A full disk is refused up front, not failed in the middle (issue 14 item 9, the whole state directory).

Invariant: below the free-space reserve or over the records cap, new work is
refused with one sentence, nothing already logged is lost, and tasks can
still be failed, cancelled or interrupted; freeing space lets work go on.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from armor_rx import Armor
from armor_rx.errors import StateDirFull


@pytest.fixture
def small_disk(tmp_path):
    """A real 8 MiB filesystem (tmpfs), so 'the disk is full' is true, not simulated."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root (and CAP_SYS_ADMIN)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(path, leave: int) -> None:
    """Fill the filesystem of ``path`` until ``leave`` bytes are free."""
    import shutil

    free = shutil.disk_usage(path).free
    with open(path / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def test_new_work_is_refused_below_the_reserve_and_winding_down_still_works(small_disk):
    state = small_disk / "state"
    with Armor(state_dir=state, disk_reserve=2 * 1024 * 1024) as armor:
        armor.create_task("before")
        armor.start("before")
        logged = len(list(armor.history()))
        _fill(small_disk, leave=1024 * 1024)  # 1 MiB left: under the 2 MiB reserve
        for attempt in (lambda: armor.create_task("after"), lambda: armor.complete("before")):
            with pytest.raises(StateDirFull, match="MiB free") as refused:
                attempt()
            assert "\n" not in str(refused.value)
        armor.fail("before", "the disk is full")  # winding down is never refused
        assert armor.task("before").state.value == "failed"
        assert len(list(armor.history())) > logged  # and it was recorded
        (small_disk / "filler").unlink()
        armor.create_task("after")  # room again: work goes on
    with Armor(state_dir=state) as again:  # nothing logged was lost
        assert {t.task_id: t.state.value for t in again.tasks()} == {"before": "failed", "after": "pending"}


def test_records_over_the_cap_refuse_new_work(tmp_path):
    with Armor(state_dir=tmp_path / "state", state_cap=20_000) as armor:
        armor.create_task("t0")
        armor.start("t0")
        for n in range(300):  # each event is a few hundred bytes
            armor.emit("t0", "note.added", {"n": n, "text": "x" * 100})
        time.sleep(2.1)  # the size is measured at most every 2 s
        with pytest.raises(StateDirFull, match="over its cap"):
            armor.create_task("t1")
        armor.cancel("t0")
        assert armor.task("t0").state.value == "cancelled"
