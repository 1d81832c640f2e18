"""Synthetic preference pairs that teach the demo reward model what a good answer looks like.

A chosen answer is helpful, on-topic and complete. A rejected one has exactly one flaw: it answers
another question, evades, is rude, or stops mid-sentence. Every part a pair is composed from
(topic, question phrasing, answer style, opener, closer, refusal and insult wording) is split
between a training share and a held-out share, so that held-out accuracy measures whether the
model learnt the idea rather than the templates.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from model_store.demo.topics import TOPICS, Topic
from model_store.demo.wordings import (
    CLOSERS,
    CONNECTORS,
    EVASION_ENDS,
    EVASIONS,
    HOW_LIST_INTROS,
    HOW_QUESTIONS,
    INSULT_ENDS,
    INSULTS,
    LEAD_INS,
    OPENERS,
    WHAT_LIST_INTROS,
    WHAT_QUESTIONS,
)

Flaw = Literal["off_topic", "evasive", "rude", "truncated"]
FLAWS: tuple[Flaw, ...] = ("off_topic", "evasive", "rude", "truncated")

_T = TypeVar("_T")


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: `chosen` is the better answer to `prompt` than `rejected`."""

    prompt: str
    chosen: str
    rejected: str
    flaw: Flaw | Literal[""] = ""  # what is wrong with `rejected`, for per-kind evaluation


def generate_pairs(n: int, seed: int, *, held_out: bool = False) -> list[PreferencePair]:
    """Return `n` pairs drawn with `random.Random(seed)`; `held_out` uses only the held-out parts.

    The same (n, seed, held_out) always gives the same pairs. Training and held-out pairs share
    no topic, question phrasing, answer style, opener, closer, refusal or insult.
    """
    rng = random.Random(f"rmserve-demo/{seed}/{'held-out' if held_out else 'train'}")
    parts = _parts(held_out)
    return [parts.pair(rng) for _ in range(n)]


def split_pairs(
    n_train: int, n_held_out: int, seed: int
) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Return (training pairs, held-out pairs) built from disjoint parts."""
    return generate_pairs(n_train, seed), generate_pairs(n_held_out, seed, held_out=True)


def _share(items: Sequence[_T], held_out: bool, every: int = 4) -> list[_T]:
    """Every `every`-th item (from the last of each group) is held out; the rest train."""
    return [x for i, x in enumerate(items) if (i % every == every - 1) == held_out]


class _Parts:
    """The building blocks available to one side of the split, and how they combine."""

    def __init__(self, held_out: bool) -> None:
        by_domain: dict[str, list[Topic]] = {}
        for topic in TOPICS:
            by_domain.setdefault(topic.domain, []).append(topic)
        # Split topics inside each domain so that held-out topics are unseen but not exotic.
        self.topics = [t for ts in by_domain.values() for t in _share(ts, held_out, every=3)]
        self.questions = {
            "how": _share(HOW_QUESTIONS, held_out),
            "what": _share(WHAT_QUESTIONS, held_out),
        }
        self.lead_ins = _share(LEAD_INS, held_out)
        self.openers = _share(OPENERS, held_out)
        self.list_intros = {
            "how": _share(HOW_LIST_INTROS, held_out),
            "what": _share(WHAT_LIST_INTROS, held_out),
        }
        self.closers = _share(CLOSERS, held_out)
        self.connectors = _share(CONNECTORS, held_out)
        self.styles = _share(_STYLES, held_out, every=3)
        self.evasions = _share(EVASIONS, held_out)
        self.evasion_ends = _share(EVASION_ENDS, held_out)
        self.insults = _share(INSULTS, held_out)
        self.insult_ends = _share(INSULT_ENDS, held_out)

    def pair(self, rng: random.Random) -> PreferencePair:
        topic = rng.choice(self.topics)
        prompt = self.prompt(rng, topic)
        flaw: Flaw = rng.choice(FLAWS)
        if flaw == "truncated":
            # Whole answers of three or more sentences, so that the cut one is not simply
            # "shorter": the chosen answer is drawn separately and may well be shorter still.
            chosen = self.answer(rng, topic)
            rejected = _cut_mid_sentence(rng, self.answer(rng, topic, min_facts=3))
        else:
            chosen = self.answer(rng, topic)
            rejected = {
                "off_topic": self.off_topic,
                "evasive": self.evasive,
                "rude": self.rude,
            }[flaw](rng, topic)
        return PreferencePair(prompt, chosen, rejected, flaw)

    def prompt(self, rng: random.Random, topic: Topic) -> str:
        question = rng.choice(self.questions[topic.kind]).format(p=topic.phrase)
        if rng.random() < 0.3:
            return f"{rng.choice(self.lead_ins)} {question}"
        return question

    def answer(self, rng: random.Random, topic: Topic, min_facts: int = 1) -> str:
        count = rng.choice([k for k in (1, 2, 2, 3, 3, 3, 4, 4, 4, 4) if k >= min_facts])
        # Mostly from the first fact, which introduces the subject the later ones refer to.
        start = 0 if rng.random() < 0.7 else rng.randrange(len(topic.facts) - count + 1)
        facts = list(topic.facts[start : start + count])
        style = rng.choice(self.styles)
        return style(self, rng, topic, facts)

    def off_topic(self, rng: random.Random, topic: Topic) -> str:
        other = rng.choice([t for t in self.topics if t.domain != topic.domain])
        return self.answer(rng, other)

    def evasive(self, rng: random.Random, topic: Topic) -> str:
        return self._dismissal(rng, topic, self.evasions, self.evasion_ends)

    def rude(self, rng: random.Random, topic: Topic) -> str:
        return self._dismissal(rng, topic, self.insults, self.insult_ends)

    def _dismissal(
        self, rng: random.Random, topic: Topic, cores: list[str], ends: list[str]
    ) -> str:
        # Naming the topic keeps "mentions the subject" from being a shortcut to a high reward.
        subject = _about(topic)
        lines = [c.format(t=subject) for c in rng.sample(cores, rng.choice((1, 1, 2)))]
        if rng.random() < 0.5:
            lines.append(rng.choice(ends))
        return " ".join(lines)

    # Answer styles. Each turns a topic and some of its facts into one helpful answer.

    def _opener(self, rng: random.Random, topic: Topic, p: float = 0.6) -> str:
        if rng.random() >= p:
            return ""
        return rng.choice(self.openers).format(t=_second_person(topic.phrase)) + " "

    def _closer(self, rng: random.Random, p: float = 0.45) -> str:
        return " " + rng.choice(self.closers) if rng.random() < p else ""

    def _paragraph(self, rng: random.Random, topic: Topic, facts: list[str]) -> str:
        return self._opener(rng, topic) + " ".join(facts) + self._closer(rng)

    def _numbered(self, rng: random.Random, topic: Topic, facts: list[str]) -> str:
        intro = rng.choice(self.list_intros[topic.kind]).format(t=_second_person(topic.phrase))
        items = "\n".join(f"{i}. {fact}" for i, fact in enumerate(facts, 1))
        return f"{intro}\n{items}" + self._closer(rng).replace(" ", "\n", 1)

    def _bullets(self, rng: random.Random, topic: Topic, facts: list[str]) -> str:
        intro = rng.choice(self.list_intros[topic.kind]).format(t=_second_person(topic.phrase))
        items = "\n".join(f"- {fact}" for fact in facts)
        return f"{intro}\n{items}" + self._closer(rng).replace(" ", "\n", 1)

    def _connected(self, rng: random.Random, topic: Topic, facts: list[str]) -> str:
        linked = [f"{rng.choice(self.connectors)} {_lower_first(f)}" for f in facts[1:]]
        joined = [facts[0], *linked]
        return self._opener(rng, topic) + " ".join(joined) + self._closer(rng)

    def _two_paragraphs(self, rng: random.Random, topic: Topic, facts: list[str]) -> str:
        middle = max(1, len(facts) // 2)
        body = " ".join(facts[:middle])
        if facts[middle:]:
            body += "\n\n" + " ".join(facts[middle:])
        return self._opener(rng, topic, p=0.8) + body + self._closer(rng)

    def _sequenced(self, rng: random.Random, topic: Topic, facts: list[str]) -> str:
        if len(facts) == 1 or topic.kind == "what":  # explanations are not sequences of steps
            return self._bullets(rng, topic, facts)
        words = ["First,", *(["Then,", "Next,", "After that,"] * 2)][: len(facts) - 1]
        words.append("Finally,")
        steps = [f"{w} {_lower_first(f)}" for w, f in zip(words, facts, strict=True)]
        return self._opener(rng, topic, p=0.4) + " ".join(steps) + self._closer(rng)


@functools.cache
def _parts(held_out: bool) -> _Parts:
    return _Parts(held_out)


_Style = Callable[[_Parts, random.Random, Topic, list[str]], str]
# The last of each three styles (bullets, step sequences) is held out: a new layout.
_STYLES: list[_Style] = [
    _Parts._paragraph,
    _Parts._numbered,
    _Parts._bullets,
    _Parts._connected,
    _Parts._two_paragraphs,
    _Parts._sequenced,
]


def _cut_mid_sentence(rng: random.Random, answer: str) -> str:
    """Stop the answer after a word that does not end a sentence, past its first quarter."""
    words = answer.split(" ")
    cuts = [
        i
        for i in range(max(3, len(words) // 4), len(words) - 2)
        if not re.search(r"[.!?:]$", words[i - 1]) and "\n" not in words[i - 1]
    ]
    if not cuts:  # too short to cut inside a sentence; keep its first half
        return " ".join(words[: max(1, len(words) // 2)])
    return " ".join(words[: rng.choice(cuts)]).rstrip(",;")


def _about(topic: Topic) -> str:
    """The topic as the assistant would name it: "how to boil an egg", "why the sky is blue"."""
    phrase = _second_person(topic.phrase)
    return f"how to {phrase}" if topic.kind == "how" else phrase


_PERSON = {"my": "your", "I": "you", "me": "you"}


def _second_person(phrase: str) -> str:
    # "I" only as a subject ("what I need"), never the numeral in "World War I".
    return re.sub(r"\b(my|me|I(?= (?:should|need|can)\b))\b", lambda m: _PERSON[m.group(1)],
                  phrase)


_KEEP_CAPITAL = {"English", "Gutenberg's", "Python's", "Monet,", "Monet", "I", "Hawaii"}


def _lower_first(sentence: str) -> str:
    first = sentence.split(" ", 1)[0]
    if first in _KEEP_CAPITAL or sum(c.isupper() for c in first) > 1:
        return sentence
    return sentence[0].lower() + sentence[1:]
