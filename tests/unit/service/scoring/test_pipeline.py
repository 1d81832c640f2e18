"""A big request through the scorer: tokenised in chunks that are computed while later chunks
still encode, admitted in parts into a queue smaller than it, answered in order."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from service.scoring.items import PromptResponse
from service.scoring.pipeline import TOKENIZE_CHUNK
from service.scoring.preparation import ScoringLimits
from tests.unit.service.scoring.conftest import Harness

ITEMS = [PromptResponse(f"question {i}?", "an answer " * (i % 13)) for i in range(4 * TOKENIZE_CHUNK)]


@pytest.fixture
def big_harness(tiny_model_dirs: dict[str, Path]) -> Harness:
    made = Harness(tiny_model_dirs["bert-right"], limits=ScoringLimits(max_inputs_per_request=len(ITEMS)))
    yield made
    made.close()


class Recording:
    """The real formatter, slowed down and recording when each chunk is done."""

    def __init__(self, formatter, events: list[str]) -> None:
        self._formatter, self._events = formatter, events
        self.max_length = formatter.max_length

    def format(self, items):
        time.sleep(0.05)
        formatted = self._formatter.format(items)
        self._events.append("formatted")
        return formatted


def test_the_first_forward_passes_run_while_later_items_still_encode(big_harness: Harness) -> None:
    events: list[str] = []
    served = big_harness.registry.get("rm")
    served.formatter = Recording(served.formatter, events)  # type: ignore[assignment]
    score = big_harness.backend.score

    def recorded(batch):
        events.append("pass")
        return score(batch)

    served.batcher._score_batch = recorded
    result = big_harness.run(lambda s: s.score(ITEMS))
    assert result.rewards == big_harness.expected(ITEMS)
    assert events.count("formatted") == 4
    assert events.index("pass") < len(events) - events[::-1].index("formatted") - 1, events


def test_a_request_bigger_than_the_queue_is_scored_whole_and_in_order(big_harness: Harness) -> None:
    # The harness's queue holds 100 items; this request holds ten times as many.
    result = big_harness.run(lambda s: s.score(ITEMS))
    assert result.rewards == big_harness.expected(ITEMS)
    assert len(result.truncated) == len(ITEMS)
    assert big_harness.backend.rows_computed == len(ITEMS)
