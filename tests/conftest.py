"""Shared test configuration."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the developer's own MXPROBE_* environment."""
    for name in list(os.environ):
        if name.startswith("MXPROBE_"):
            monkeypatch.delenv(name)
