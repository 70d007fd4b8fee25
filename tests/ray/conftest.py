"""The Ray tier: skipped when ray[data] is not importable, unless ``SAIL_REQUIRE_RAY=1`` (CI's Ray tier)."""

from __future__ import annotations

import os

import pytest

try:
    import ray.data  # noqa: F401

    MISSING = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    MISSING = f"ray[data] is not importable ({exc}): pip install 'sail-lite[ray]'"

if MISSING is not None and os.environ.get("SAIL_REQUIRE_RAY") == "1":  # pragma: no cover
    raise pytest.UsageError("SAIL_REQUIRE_RAY=1 but " + MISSING)
