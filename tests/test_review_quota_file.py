"""Review: a damaged per-task output-quota file (docker/output/<task>.json).

Invariant: whatever bytes that file holds, loading it never raises (a TypeError
there is raised inside the output consumer and fails every later command of the
task), and the count it yields is never negative (a negative count is a budget
larger than the quota). Cases: 12 damaged bodies.
"""

from __future__ import annotations

import pytest

from armor_rx.sinks.docker.quota import OutputQuota

BODIES = [b'{"recorded": null}', b'{"recorded": [1]}', b'{"recorded": {}}', b'{"recorded": -100000000}',
          b'{"recorded": "12"}', b'{"recorded": true}', b"\xff\xfe", b"", b"[]", b"null", b'{"recorded": 1.5}',
          b'{"recorded": "x"}']


@pytest.mark.parametrize("body", BODIES)
def test_a_damaged_quota_file_never_raises_nor_grants_more_than_the_quota(tmp_path, body):
    (tmp_path / "docker" / "output").mkdir(parents=True)
    (tmp_path / "docker" / "output" / "t.json").write_bytes(body)
    quota = OutputQuota(1000, state_dir=tmp_path)
    assert quota.used("t") >= 0
    taken = 0
    while quota.take("t", 100):
        taken += 100
        assert taken <= 1100
    quota.save("t")
    assert OutputQuota(1000, state_dir=tmp_path).used("t") >= 1000
