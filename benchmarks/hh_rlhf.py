"""Reading the hh-rlhf harmless-base test split from ../shared/data (never committed, never tested)."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

HH_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
ASSISTANT = "\n\nAssistant:"


def split_transcript(transcript: str) -> tuple[str, str]:
    """(prompt up to and including the last assistant marker, the final assistant reply)."""
    cut = transcript.rfind(ASSISTANT) + len(ASSISTANT)
    return transcript[:cut], transcript[cut:].strip()


def preference_rows(path: Path, limit: int = 0) -> list[dict[str, str]]:
    """The file's {"chosen", "rejected"} transcripts whose both sides end in an assistant reply."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in itertools.islice(lines, limit or None)]
    return [r for r in rows if ASSISTANT in r["chosen"] and ASSISTANT in r["rejected"]]
