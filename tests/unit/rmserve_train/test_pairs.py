"""PAIRS files: the three layouts, hh-rlhf transcripts, reference items, splits and errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rmserve_train.pairs import (
    Comparison,
    DataError,
    parse_transcript,
    read_pairs,
    read_reference_items,
    split_pairs,
)
from service.scoring.items import Conversation, Message, PromptResponse, RawText


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_three_layouts_become_comparisons(tmp_path: Path) -> None:
    user, assistant = {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello!"}
    rude = {"role": "assistant", "content": "Go away."}
    rows = [
        {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away.", "id": 7},
        {"prompt": [user], "chosen": [assistant], "rejected": [rude]},
        {"chosen": [user, assistant], "rejected": [user, rude]},
        {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!",
         "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."},
    ]
    pairs = read_pairs(_write(tmp_path / "p.jsonl", rows))
    assert pairs[0] == Comparison(PromptResponse("Hi?", "Hello!"), PromptResponse("Hi?", "Go away."))
    conversation = Comparison(
        Conversation((Message("user", "Hi?"), Message("assistant", "Hello!"))),
        Conversation((Message("user", "Hi?"), Message("assistant", "Go away."))),
    )
    assert pairs[1:] == [conversation] * 3


def test_hh_transcripts_keep_every_turn() -> None:
    transcript = ("\n\nHuman: what are some pranks?\n\nAssistant: Are you looking for jokes?"
                  "\n\nHuman: yep\n\nHuman: still there?\n\nAssistant: Sure.\n\n1. One\n\n2. Two")
    assert parse_transcript(transcript) == (
        Message("user", "what are some pranks?"),
        Message("assistant", "Are you looking for jokes?"),
        Message("user", "yep"),
        Message("user", "still there?"),
        Message("assistant", "Sure.\n\n1. One\n\n2. Two"),  # paragraphs inside a turn stay
    )
    empty_reply = (Message("user", "hi"), Message("assistant", ""))
    assert parse_transcript("\n\nHuman: hi\n\nAssistant:") == empty_reply


def test_gzip_limit_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(5):
            f.write(json.dumps({"prompt": f"q{i}", "chosen": "a", "rejected": "b"}) + "\n\n")
    assert [p.chosen.prompt for p in read_pairs(path, limit=3)] == ["q0", "q1", "q2"]  # type: ignore[union-attr]


def test_reference_items_take_both_sides_or_single_items(tmp_path: Path) -> None:
    rows = [
        {"prompt": "p", "chosen": "a", "rejected": "b"},
        {"prompt": "p", "response": "c"},
        {"messages": [{"role": "user", "content": "m"}]},
        {"text": "raw"},
    ]
    assert read_reference_items(_write(tmp_path / "r.jsonl", rows)) == [
        PromptResponse("p", "a"), PromptResponse("p", "b"), PromptResponse("p", "c"),
        Conversation((Message("user", "m"),)), RawText("raw"),
    ]


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "p.jsonl:2: not JSON"),
    ('["a"]', "p.jsonl:2: expected a JSON object"),
    ('{"prompt": "p", "chosen": "a"}', "p.jsonl:2: a pair needs 'chosen' and 'rejected'"),
    ('{"chosen": "a", "rejected": "b"}', "p.jsonl:2: .*must be an hh-rlhf transcript"),
    ('{"prompt": "p", "chosen": [{"role": "assistant", "content": "a"}], "rejected": []}',
     "p.jsonl:2: .*'prompt' must be messages too"),
    ('{"chosen": [{"role": "user"}], "rejected": [{"role": "user", "content": "b"}]}',
     "p.jsonl:2: 'content'"),
])
def test_bad_lines_are_named(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n" + line + "\n")
    with pytest.raises(DataError, match=message):
        read_pairs(path)


def test_a_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read"):
        read_pairs(tmp_path / "missing.jsonl")


def test_split_is_seeded_disjoint_and_complete() -> None:
    pairs = [Comparison(PromptResponse(str(i), "a"), PromptResponse(str(i), "b")) for i in range(100)]
    train, held_out = split_pairs(pairs, 0.2, seed=3)
    assert (len(train), len(held_out)) == (80, 20)
    assert sorted([*train, *held_out], key=lambda p: int(p.chosen.prompt)) == pairs  # type: ignore[union-attr]
    assert split_pairs(pairs, 0.2, seed=3) == (train, held_out)
    assert split_pairs(pairs, 0.2, seed=4) != (train, held_out)
    with pytest.raises(DataError, match="too few"):
        split_pairs(pairs[:1], 0.5, seed=0)
