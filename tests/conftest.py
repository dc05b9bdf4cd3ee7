"""Fixtures shared by the add-on's test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
from blender_runner import build_extension


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> Path:
    """The extension zip, built once for the whole run."""
    return build_extension(tmp_path_factory.mktemp("dist"))
