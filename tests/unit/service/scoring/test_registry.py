"""The registry knows models by name, nothing else."""

from __future__ import annotations

import dataclasses

import pytest

from service.scoring.errors import UnknownModelError
from tests.unit.service.scoring.conftest import Harness


def test_the_first_model_is_the_default_and_names_are_unique(harness: Harness) -> None:
    registry = harness.registry
    assert registry.get(None).name == "rm"
    assert [m.name for m in registry.all()] == ["rm", "other"]
    with pytest.raises(ValueError, match="two models are served under the name 'rm'"):
        registry.add(dataclasses.replace(registry.get("rm")))


def test_an_unknown_name_lists_the_loaded_ones_and_is_not_echoed_whole(harness: Harness) -> None:
    with pytest.raises(UnknownModelError) as failure:
        harness.registry.get("x" * 100_000)
    message = str(failure.value)
    assert message.endswith("is not served here; loaded: rm, other")
    assert len(message) < 200
