"""Review 12: a checkpoint policy's ``at`` that is not a list of points is a ConfigError (the API's one-line error).

``{"at": 5}`` raised TypeError from tuple(5): through the service that is an internal error, not a message to act on.
"""

from __future__ import annotations

import pytest

from armor_rx.errors import ConfigError
from armor_rx.operators import CheckpointTriggers


@pytest.mark.parametrize("at", [5, 1.5, True, {"before_exec": 1}])
def test_an_at_that_is_not_a_list_of_points_is_a_config_error(at: object) -> None:
    with pytest.raises(ConfigError, match="at"):
        CheckpointTriggers.from_payload({"at": at})


def test_one_point_given_as_a_string_is_that_point() -> None:
    assert CheckpointTriggers.from_payload({"at": "before_exec"}).at == ("before_exec",)
