import pytest


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / ".armor"


@pytest.fixture
def armor(state_dir):
    from armor_rx.session import Armor

    with Armor(state_dir=state_dir) as session:
        yield session
