"""Items cross between processes exactly: token ids, token types and shared prefixes as int32
buffers, rewards as float64."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.backends.base import EncodedPair
from service.engine import wire
from service.settings import Settings
from service.supervisor import engine_settings


def test_pairs_cross_unchanged() -> None:
    pairs = [EncodedPair((101, 7, 102), (0, 0, 1), 2),
             EncodedPair((101, 2**31 - 1, 5, 6, 102), (0, 1, 1, 1, 1)), EncodedPair((), ())]
    frame = wire.encode("add", 1, "bert", 0, True, *wire.pack_pairs(pairs))
    kind, sid, model, priority, last, *packed = wire.decode(frame)
    assert (kind, sid, model, priority, last) == ("add", 1, "bert", 0, True)
    assert wire.unpack_pairs(*packed) == pairs


def test_pairs_without_token_types_stay_without() -> None:
    pairs = [EncodedPair((1, 2, 3)), EncodedPair((4,), None, 1)]
    assert wire.unpack_pairs(*wire.pack_pairs(pairs)) == pairs


def test_rewards_cross_bit_for_bit() -> None:
    rewards = [0.1, -3.3125e-7, 1e308, 1 / 3]
    assert wire.unpack_rewards(wire.pack_rewards(rewards)) == rewards


def test_model_cards_cross() -> None:
    card = wire.ModelCard("m", "v1", "torch", "cuda:0", "bfloat16", True, 256, 32768, 0.5)
    assert wire.ModelCard.from_wire(wire.decode(wire.encode(card.as_wire()))[0]) == card


def test_cpu_engines_split_the_cores_and_a_thread_count_given_stands() -> None:
    split = Settings(device="cpu,cpu", api_workers=2)
    assert [engine_settings(split, d).device for d in split.devices] == ["cpu", "cpu"]
    assert engine_settings(split, "cpu").threads >= 1
    assert engine_settings(Settings(device="cpu,cpu", threads=3), "cpu").threads == 3
    assert engine_settings(Settings(device="cuda:0,cuda:1"), "cuda:1").threads == 0


def test_several_processes_are_separate_engines_unless_refused() -> None:
    assert not Settings().separate_engine
    assert Settings(api_workers=2).separate_engine and Settings(device="cpu,cpu").separate_engine
    assert Settings(engine="separate").separate_engine
    with pytest.raises(ValidationError, match="in-process serves one device"):
        Settings(engine="in-process", api_workers=2)
