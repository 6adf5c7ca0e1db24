"""``armor-rx image ...``: the image cache (registered by armor_rx.commands.docker)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(verbs: Any, common: argparse.ArgumentParser) -> dict[str, Callable[[argparse.Namespace], int]]:
    return {}
