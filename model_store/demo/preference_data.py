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


@dataclass(frozen=True)
class _Topic:
    domain: str
    kind: Literal["how", "what"]  # "how": a task ("boil an egg"); "what": a thing to explain
    phrase: str
    facts: tuple[str, ...]


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
        by_domain: dict[str, list[_Topic]] = {}
        for topic in _TOPICS:
            by_domain.setdefault(topic.domain, []).append(topic)
        # Split topics inside each domain so that held-out topics are unseen but not exotic.
        self.topics = [t for ts in by_domain.values() for t in _share(ts, held_out, every=3)]
        self.questions = {
            "how": _share(_HOW_QUESTIONS, held_out),
            "what": _share(_WHAT_QUESTIONS, held_out),
        }
        self.lead_ins = _share(_LEAD_INS, held_out)
        self.openers = _share(_OPENERS, held_out)
        self.list_intros = {
            "how": _share(_HOW_LIST_INTROS, held_out),
            "what": _share(_WHAT_LIST_INTROS, held_out),
        }
        self.closers = _share(_CLOSERS, held_out)
        self.connectors = _share(_CONNECTORS, held_out)
        self.styles = _share(_STYLES, held_out, every=3)
        self.evasions = _share(_EVASIONS, held_out)
        self.evasion_ends = _share(_EVASION_ENDS, held_out)
        self.insults = _share(_INSULTS, held_out)
        self.insult_ends = _share(_INSULT_ENDS, held_out)

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

    def prompt(self, rng: random.Random, topic: _Topic) -> str:
        question = rng.choice(self.questions[topic.kind]).format(p=topic.phrase)
        if rng.random() < 0.3:
            return f"{rng.choice(self.lead_ins)} {question}"
        return question

    def answer(self, rng: random.Random, topic: _Topic, min_facts: int = 1) -> str:
        count = rng.choice([k for k in (1, 2, 2, 3, 3, 3, 4, 4, 4, 4) if k >= min_facts])
        # Mostly from the first fact, which introduces the subject the later ones refer to.
        start = 0 if rng.random() < 0.7 else rng.randrange(len(topic.facts) - count + 1)
        facts = list(topic.facts[start : start + count])
        style = rng.choice(self.styles)
        return style(self, rng, topic, facts)

    def off_topic(self, rng: random.Random, topic: _Topic) -> str:
        other = rng.choice([t for t in self.topics if t.domain != topic.domain])
        return self.answer(rng, other)

    def evasive(self, rng: random.Random, topic: _Topic) -> str:
        return self._dismissal(rng, topic, self.evasions, self.evasion_ends)

    def rude(self, rng: random.Random, topic: _Topic) -> str:
        return self._dismissal(rng, topic, self.insults, self.insult_ends)

    def _dismissal(
        self, rng: random.Random, topic: _Topic, cores: list[str], ends: list[str]
    ) -> str:
        # Naming the topic keeps "mentions the subject" from being a shortcut to a high reward.
        subject = _about(topic)
        lines = [c.format(t=subject) for c in rng.sample(cores, rng.choice((1, 1, 2)))]
        if rng.random() < 0.5:
            lines.append(rng.choice(ends))
        return " ".join(lines)

    # Answer styles. Each turns a topic and some of its facts into one helpful answer.

    def _opener(self, rng: random.Random, topic: _Topic, p: float = 0.6) -> str:
        if rng.random() >= p:
            return ""
        return rng.choice(self.openers).format(t=_second_person(topic.phrase)) + " "

    def _closer(self, rng: random.Random, p: float = 0.45) -> str:
        return " " + rng.choice(self.closers) if rng.random() < p else ""

    def _paragraph(self, rng: random.Random, topic: _Topic, facts: list[str]) -> str:
        return self._opener(rng, topic) + " ".join(facts) + self._closer(rng)

    def _numbered(self, rng: random.Random, topic: _Topic, facts: list[str]) -> str:
        intro = rng.choice(self.list_intros[topic.kind]).format(t=_second_person(topic.phrase))
        items = "\n".join(f"{i}. {fact}" for i, fact in enumerate(facts, 1))
        return f"{intro}\n{items}" + self._closer(rng).replace(" ", "\n", 1)

    def _bullets(self, rng: random.Random, topic: _Topic, facts: list[str]) -> str:
        intro = rng.choice(self.list_intros[topic.kind]).format(t=_second_person(topic.phrase))
        items = "\n".join(f"- {fact}" for fact in facts)
        return f"{intro}\n{items}" + self._closer(rng).replace(" ", "\n", 1)

    def _connected(self, rng: random.Random, topic: _Topic, facts: list[str]) -> str:
        linked = [f"{rng.choice(self.connectors)} {_lower_first(f)}" for f in facts[1:]]
        joined = [facts[0], *linked]
        return self._opener(rng, topic) + " ".join(joined) + self._closer(rng)

    def _two_paragraphs(self, rng: random.Random, topic: _Topic, facts: list[str]) -> str:
        middle = max(1, len(facts) // 2)
        body = " ".join(facts[:middle])
        if facts[middle:]:
            body += "\n\n" + " ".join(facts[middle:])
        return self._opener(rng, topic, p=0.8) + body + self._closer(rng)

    def _sequenced(self, rng: random.Random, topic: _Topic, facts: list[str]) -> str:
        if len(facts) == 1 or topic.kind == "what":  # explanations are not sequences of steps
            return self._bullets(rng, topic, facts)
        words = ["First,", *(["Then,", "Next,", "After that,"] * 2)][: len(facts) - 1]
        words.append("Finally,")
        steps = [f"{w} {_lower_first(f)}" for w, f in zip(words, facts, strict=True)]
        return self._opener(rng, topic, p=0.4) + " ".join(steps) + self._closer(rng)


@functools.cache
def _parts(held_out: bool) -> _Parts:
    return _Parts(held_out)


_Style = Callable[[_Parts, random.Random, _Topic, list[str]], str]
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


def _about(topic: _Topic) -> str:
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


_HOW_QUESTIONS = [
    "How do I {p}?",
    "What's the best way to {p}?",
    "Can you tell me how to {p}?",
    "I want to {p}. Where should I start?",
    "Any tips on how to {p}?",
    "What steps should I follow to {p}?",
    "I've never tried to {p} before. How does it work?",
    "Could you walk me through how to {p}?",
    "how to {p}",
    "Explain how I can {p}, please.",
    "Is there an easy way to {p}?",
    "What do I need to know to {p}?",
]

_WHAT_QUESTIONS = [
    "Can you explain {p}?",
    "I've always wondered about {p}.",
    "Do you know {p}?",
    "I'm confused about {p}. Can you clear it up?",
    "Tell me {p}.",
    "Could you help me understand {p}?",
    "My kid asked me {p} and I didn't know. What should I say?",
    "What's the short explanation of {p}?",
    "I'd like to know {p}.",
    "Help me understand {p}.",
    "Please explain {p} in simple terms.",
    "Someone asked me {p} today. What's the answer?",
]

_LEAD_INS = [
    "Quick question.",
    "I'm a complete beginner.",
    "Hi!",
    "Sorry if this is basic.",
    "This has been bugging me all week.",
    "Hello there.",
    "I'm asking for a friend.",
    "I hope you can help.",
    "I've been reading about this lately.",
    "Hey.",
    "I tried searching online but got confused.",
    "Random question for you.",
]

_OPENERS = [
    "Sure!",
    "Good question.",
    "Happy to help.",
    "Great question!",
    "Of course.",
    "Here's what you need to know.",
    "Absolutely.",
    "Glad you asked.",
    "Sure thing.",
    "No problem.",
    "Certainly.",
    "Let me explain.",
]

_HOW_LIST_INTROS = [
    "Here's how to {t}:",
    "Sure, here are the steps:",
    "You can do it like this:",
    "Here's a simple way to {t}:",
    "Follow these steps:",
    "Here's what works well:",
    "Try this:",
    "To {t}, do the following:",
]

_WHAT_LIST_INTROS = [
    "Here are the key points:",
    "Here's the short version:",
    "In a nutshell:",
    "Here's what's going on:",
    "The main ideas are:",
    "Sure, here's an overview:",
    "Good question. Briefly:",
    "Here's an explanation:",
]

_CLOSERS = [
    "Hope that helps!",
    "Let me know if you have other questions.",
    "Good luck!",
    "Feel free to ask if anything is unclear.",
    "I hope this is useful.",
    "Happy to go into more detail if you like.",
    "Have fun with it!",
    "That should cover the basics.",
    "Does that answer your question?",
    "Let me know how it goes.",
    "Just ask if you need more.",
    "Hope this clears it up.",
]

_CONNECTORS = [
    "Also,",
    "On top of that,",
    "Besides that,",
    "Beyond that,",
    "In addition,",
    "It also helps to know that",
    "Another point:",
    "What's more,",
]

_EVASIONS = [
    "I can't help with that.",
    "I'd rather not get into {t}.",
    "That's not something I'm able to discuss.",
    "I'm not going to go into {t}.",
    "I don't want to answer that.",
    "Sorry, I can't say.",
    "I'll pass on that one.",
    "I prefer not to talk about {t}.",
    "That's not a question I can answer right now.",
    "Let's not talk about {t}.",
    "I'm unable to assist with this request.",
    "I'd rather not comment on {t}.",
    "Hmm, I'm not sure I should answer that.",
    "I don't discuss {t}.",
    "That's outside what I can do.",
    "I can't get into {t} today.",
]

_EVASION_ENDS = [
    "Maybe ask someone else.",
    "Let's talk about something else.",
    "Is there anything else?",
    "Perhaps look elsewhere.",
    "Try another question.",
    "Sorry about that.",
    "Let's move on.",
    "You could try a different source.",
]

_INSULTS = [
    "Are you serious? Everyone knows {t}.",
    "That's a ridiculous question.",
    "Why would you even ask me that?",
    "Figure out {t} yourself.",
    "Ugh, not this again.",
    "Look it up, it's not my job to teach you {t}.",
    "What a waste of my time.",
    "If you can't work out {t} on your own, I can't help you.",
    "Honestly, that's a dumb thing to ask.",
    "Do your own homework.",
    "Stop bothering me with {t}.",
    "Nobody cares about {t}.",
    "Wow, you really don't know {t}? Pathetic.",
    "I'm not wasting my breath on {t}.",
    "Seriously, use your head.",
    "Only an idiot would need help with {t}.",
]

_INSULT_ENDS = [
    "Go away.",
    "Whatever.",
    "Use your brain.",
    "Don't ask me again.",
    "Seriously.",
    "Leave me alone.",
    "Come on.",
    "Unbelievable.",
]


def _topics(domain: str, *entries: tuple[str, str, str, str, str, str]) -> list[_Topic]:
    """Entries are (kind, phrase, fact 1, ..., fact 4)."""
    return [_Topic(domain, kind, phrase, facts) for kind, phrase, *facts in entries]  # type: ignore[arg-type]


_TOPICS: list[_Topic] = [
    *_topics(
        "cooking",
        ("how", "boil an egg",
         "Place the eggs in a pot and cover them with cold water by about an inch.",
         "Bring the water to a boil, then turn off the heat and cover the pot.",
         "Leave them for about 6 minutes for soft yolks or 10 to 12 minutes for hard-boiled.",
         "Move the eggs into ice water afterwards so they stop cooking and peel easily."),
        ("how", "cook rice on the stove",
         "Rinse the rice in a sieve until the water runs mostly clear.",
         "Use about one and a half cups of water per cup of white rice and add a pinch of salt.",
         "Bring it to a boil, cover, and simmer on low heat for around 15 minutes.",
         "Let it rest off the heat for 5 minutes, then fluff it with a fork."),
        ("what", "why bread goes stale",
         "Bread goes stale mainly because the starch inside it recrystallizes as it ages.",
         "This process, called retrogradation, makes the crumb firm and dry even if little water"
         " is lost.",
         "It happens fastest at fridge temperatures, so bread keeps better on the counter or in"
         " the freezer.",
         "Briefly warming stale bread in the oven can reverse some of the change."),
        ("how", "make a simple tomato sauce",
         "Gently cook chopped garlic and onion in olive oil until soft.",
         "Add a can of crushed tomatoes with a pinch of salt and a little sugar if they taste"
         " sharp.",
         "Let it simmer for 20 to 30 minutes, stirring now and then, until it thickens.",
         "Finish with fresh basil or a knob of butter and adjust the seasoning."),
        ("how", "sharpen a kitchen knife",
         "Soak the whetstone if it needs water, then set it on a damp towel so it doesn't slide.",
         "Hold the blade at a steady angle of about 15 to 20 degrees against the stone.",
         "Push the edge across the stone in smooth strokes, doing the same number on each side.",
         "Finish on the finer grit and test the edge by slicing a sheet of paper."),
        ("what", "the difference between baking soda and baking powder",
         "Baking soda is pure sodium bicarbonate and needs an acid, like buttermilk or yogurt,"
         " to make dough rise.",
         "Baking powder already contains both the soda and a dry acid, so it only needs"
         " moisture and heat.",
         "Recipes with acidic ingredients often use soda, while neutral batters rely on powder.",
         "They are not one-to-one substitutes, because soda is roughly three times stronger."),
    ),
    *_topics(
        "programming",
        ("how", "reverse a list in Python",
         "You can call my_list.reverse() to reverse the list in place.",
         "If you want a new list instead, use slicing with my_list[::-1].",
         "The built-in reversed(my_list) returns an iterator, which is handy in a for loop.",
         "Pick in-place reversal when you don't need the original order anymore."),
        ("how", "undo my last git commit",
         "If the commit hasn't been pushed, run git reset --soft HEAD~1 to undo it and keep your"
         " changes staged.",
         "Use git reset --hard HEAD~1 only if you really want to throw those changes away.",
         "For a commit that's already shared, git revert creates a new commit that undoes it"
         " safely.",
         "Check git log afterwards to confirm the history looks the way you expect."),
        ("what", "what a hash map is",
         "A hash map stores key and value pairs so you can look up a value by its key quickly.",
         "It runs each key through a hash function to decide which bucket the entry goes into.",
         "On average, inserting and finding items takes constant time, however big the map is.",
         "Python's dict and Java's HashMap are common examples."),
        ("how", "debug a program that crashes",
         "Start by reading the full error message and stack trace, since it usually points to"
         " the failing line.",
         "Reproduce the crash with the smallest input you can find.",
         "Add logging or use a debugger to inspect the values just before the failure.",
         "Once you find the cause, write a test for it so the bug doesn't come back."),
        ("what", "why my code should have unit tests",
         "Unit tests check small pieces of code automatically, so you find mistakes right after"
         " you make them.",
         "They let you refactor with confidence, because a failing test tells you what broke.",
         "Good tests also document how a function is supposed to behave.",
         "Over time they save far more debugging time than they cost to write."),
        ("how", "write a SQL query that counts rows per group",
         "Use GROUP BY on the column you want to group by together with COUNT(*).",
         "For example, SELECT city, COUNT(*) FROM customers GROUP BY city returns one row per"
         " city.",
         "Add a WHERE clause before GROUP BY to filter rows first.",
         "Use HAVING COUNT(*) > 10 if you only want groups above a certain size."),
    ),
    *_topics(
        "travel",
        ("how", "pack light for a week-long trip",
         "Choose a small color palette so every top works with every bottom.",
         "Pack about four days of clothes and plan to do a quick wash halfway through.",
         "Wear your bulkiest shoes and jacket on the plane instead of packing them.",
         "Use packing cubes and travel-size toiletries to save space."),
        ("how", "deal with jet lag",
         "Start shifting your sleep time by an hour a day before you leave.",
         "Once you arrive, get outside in daylight, which helps reset your body clock.",
         "Try to stay awake until a normal local bedtime, even if you're tired.",
         "Drink plenty of water and go easy on alcohol and caffeine during the flight."),
        ("what", "what I need to know before renting a car abroad",
         "Check whether your driving licence is valid there or if you need an international"
         " driving permit.",
         "Read what the insurance covers, since the cheapest deals often have a large excess.",
         "Take photos of the car before you drive away to record any existing damage.",
         "Learn the local road rules, such as which side to drive on and how tolls work."),
        ("how", "find cheap flights",
         "Be flexible with your dates, because flying midweek is often cheaper.",
         "Compare prices on a few search sites and set fare alerts for your route.",
         "Consider nearby airports, which can be much cheaper than the main one.",
         "Book roughly one to three months ahead for short flights and earlier for long-haul"
         " ones."),
        ("how", "stay safe while traveling alone",
         "Share your itinerary with someone at home and check in regularly.",
         "Keep copies of your passport and important documents apart from the originals.",
         "Choose well-reviewed accommodation in busy, well-lit areas.",
         "Trust your instincts and leave any situation that feels wrong."),
        ("what", "how travel insurance works",
         "Travel insurance is a policy you buy before a trip to cover certain costs if things go"
         " wrong.",
         "Typical plans cover medical emergencies, trip cancellations, lost luggage and delays.",
         "You usually pay first and then file a claim with receipts to get reimbursed.",
         "Read the exclusions carefully, because pre-existing conditions and risky activities"
         " are often not covered."),
    ),
    *_topics(
        "health",
        ("how", "fall asleep faster",
         "Keep a regular schedule by going to bed and waking up at the same time every day.",
         "Avoid screens for about an hour before bed, because bright light delays sleepiness.",
         "Keep your bedroom cool, dark and quiet.",
         "If you can't sleep after 20 minutes, get up and do something calm until you feel"
         " drowsy."),
        ("what", "how much water I should drink per day",
         "Most adults do well with roughly 2 to 3 liters of fluids a day, including water in"
         " food and other drinks.",
         "You need more in hot weather, during exercise or when you're ill.",
         "A simple check is your urine color, which should be pale yellow.",
         "Thirst is a reliable signal for most healthy people, so drink when you feel thirsty."),
        ("how", "treat a minor burn",
         "Cool the burn under cool running water for about 20 minutes.",
         "Remove rings or tight items near the area before it starts to swell.",
         "Cover it loosely with a clean, non-stick dressing or cling film.",
         "See a doctor if the burn is larger than your palm, on the face, or blistering badly."),
        ("what", "why stretching matters",
         "Stretching keeps your muscles and joints moving through their full range of motion.",
         "Regular stretching can ease stiffness from sitting for long periods.",
         "Dynamic stretches suit the warm-up, while static stretches suit the cool-down.",
         "Stretch gently and never push into sharp pain."),
        ("how", "reduce stress",
         "Take short breaks during the day to breathe slowly and deeply.",
         "Regular exercise, even a brisk walk, lowers stress hormones.",
         "Write down what's worrying you and break big problems into small steps.",
         "Talk to friends or a professional if the stress feels overwhelming."),
        ("how", "build a healthy breakfast",
         "Include a source of protein such as eggs, yogurt or nuts to stay full longer.",
         "Add whole grains like oats or whole wheat toast for steady energy.",
         "Throw in some fruit or vegetables for fiber and vitamins.",
         "Limit sugary cereals and pastries, which tend to leave you hungry again soon."),
    ),
    *_topics(
        "history",
        ("what", "why the Roman Empire fell",
         "Historians point to a mix of causes rather than a single reason.",
         "Political instability, with many short-lived emperors, weakened the government.",
         "Economic trouble, heavy taxes and reliance on mercenary armies drained its strength.",
         "Pressure from migrating groups like the Goths eventually overwhelmed the western half"
         " in 476 AD."),
        ("what", "what caused World War I",
         "The immediate trigger was the assassination of Archduke Franz Ferdinand in Sarajevo"
         " in 1914.",
         "Underlying causes included militarism, rival alliances, imperial competition and"
         " nationalism.",
         "The alliance system quickly pulled Europe's great powers into the conflict.",
         "Historians often summarize these factors with the acronym MAIN."),
        ("what", "how the printing press changed the world",
         "Gutenberg's press, built around 1440, made it possible to produce books quickly and"
         " cheaply.",
         "Ideas spread much faster, which helped fuel the Reformation and the Scientific"
         " Revolution.",
         "Literacy rose as books became affordable to more people.",
         "It also helped standardize spelling and languages across regions."),
        ("what", "who built the pyramids of Giza",
         "The pyramids were built by paid Egyptian laborers, not slaves as was once believed.",
         "Workers lived in nearby villages, and archaeologists have found their bakeries and"
         " tombs.",
         "They moved huge limestone blocks using sledges, ramps and a lot of organized"
         " manpower.",
         "The Great Pyramid was finished around 2560 BC for the pharaoh Khufu."),
        ("what", "what the Renaissance was",
         "The Renaissance was a cultural movement that began in Italy in the 14th century.",
         "It revived interest in classical Greek and Roman art, science and philosophy.",
         "Artists such as Leonardo da Vinci and Michelangelo created some of its most famous"
         " works.",
         "It gradually spread across Europe and helped shape the modern world."),
        ("what", "why the Berlin Wall came down",
         "By 1989, East Germany faced mass protests and a wave of people fleeing to the West.",
         "Reforms in the Soviet Union meant Moscow would no longer use force to prop up the"
         " regime.",
         "On 9 November an official mistakenly announced that the border crossings were open.",
         "Crowds gathered at the checkpoints, and the guards eventually let them through."),
    ),
    *_topics(
        "science",
        ("what", "why the sky is blue",
         "Sunlight contains all colors, but air molecules scatter short blue wavelengths much"
         " more than red ones.",
         "This effect is called Rayleigh scattering.",
         "The scattered blue light reaches your eyes from every direction, so the whole sky"
         " looks blue.",
         "At sunset, light passes through more air, so more blue is scattered away and the sky"
         " turns orange."),
        ("what", "how vaccines work",
         "Vaccines train your immune system to recognize a germ without you getting sick first.",
         "They contain a harmless piece or weakened form of the germ, or instructions to make"
         " one of its proteins.",
         "Your body responds by making antibodies and memory cells.",
         "If you meet the real germ later, your immune system can respond quickly and strongly."),
        ("what", "what photosynthesis is",
         "Photosynthesis is how plants turn light energy into chemical energy.",
         "Using sunlight, they combine carbon dioxide from the air with water from the soil.",
         "This produces glucose, which the plant uses for energy, and releases oxygen.",
         "It happens mainly in the chloroplasts inside leaf cells."),
        ("what", "why we have seasons",
         "Seasons happen because Earth's axis is tilted by about 23.5 degrees.",
         "As Earth orbits the Sun, each hemisphere takes turns leaning toward it.",
         "The hemisphere tilted toward the Sun gets more direct sunlight and longer days, which"
         " makes summer.",
         "It is not caused by Earth being closer to the Sun, which actually happens in January."),
        ("what", "how a rainbow forms",
         "A rainbow forms when sunlight enters raindrops and bends, or refracts.",
         "Inside the drop the light reflects off the back and refracts again as it leaves.",
         "Each color bends by a slightly different amount, so white light spreads into a"
         " spectrum.",
         "You see one when the sun is behind you and rain is in front of you."),
        ("what", "what a black hole is",
         "A black hole is a region of space where gravity is so strong that nothing, not even"
         " light, can escape.",
         "Most form when a very massive star collapses at the end of its life.",
         "The boundary around it is called the event horizon.",
         "Astronomers detect them by watching how they affect nearby stars and gas."),
    ),
    *_topics(
        "money",
        ("how", "make a monthly budget",
         "Write down your take-home income for the month.",
         "List fixed costs like rent and bills, then estimate variable spending such as"
         " groceries.",
         "Set aside a savings amount first, ideally around 10 to 20 percent of income.",
         "Track your spending for a few months and adjust the categories as you learn."),
        ("how", "start an emergency fund",
         "Aim for three to six months of essential expenses as a long-term goal.",
         "Start small, for example with a target of one month's rent.",
         "Set up an automatic transfer to a separate savings account on payday.",
         "Keep the money somewhere safe and easy to reach, like a high-yield savings account."),
        ("what", "how compound interest works",
         "Compound interest means you earn interest on your original money and on the interest"
         " it has already earned.",
         "For example, 1000 dollars at 5 percent grows to 1050 after a year and 1102.50 after"
         " two.",
         "The longer the money is left alone, the faster it grows.",
         "The same effect works against you on debt, which is why card balances can balloon."),
        ("how", "pay off credit card debt",
         "List all your cards with their balances and interest rates.",
         "Pay the minimum on every card, then put any extra money toward one card at a time.",
         "The avalanche method targets the highest interest rate first and saves the most"
         " money.",
         "Stop adding new charges and consider a balance transfer to a lower rate if you"
         " qualify."),
        ("what", "what an index fund is",
         "An index fund is an investment fund that tracks a market index such as the S&P 500.",
         "Instead of picking stocks, it simply holds the same companies as the index.",
         "This keeps fees low and spreads your money across many companies.",
         "Over long periods, many index funds have outperformed most actively managed funds."),
        ("how", "save money on groceries",
         "Plan your meals for the week and shop from a list.",
         "Buy store brands, which are often just as good and much cheaper.",
         "Check the unit price on the shelf label to compare sizes fairly.",
         "Use leftovers and freeze extra portions so less food goes to waste."),
    ),
    *_topics(
        "language",
        ("how", "learn a new language quickly",
         "Practice a little every day instead of cramming once a week.",
         "Focus on the most common words and phrases first.",
         "Listen to podcasts or shows in the language to train your ear.",
         "Speak with native speakers early, even if you make mistakes."),
        ("what", "the difference between affect and effect",
         "Affect is usually a verb meaning to influence something.",
         "Effect is usually a noun meaning the result of a change.",
         "For example, the weather can affect your mood, and the effect might be a bad day.",
         "A simple trick is that affect is the action and effect is the end result."),
        ("how", "improve my vocabulary",
         "Read widely, including books and articles outside your usual interests.",
         "Write down new words with an example sentence.",
         "Review them with flashcards or a spaced repetition app.",
         "Try using each new word in conversation or writing within a few days."),
        ("what", "when to use a semicolon",
         "A semicolon joins two complete sentences that are closely related.",
         "For example: I was tired; I went to bed early.",
         "It can also separate items in a list when the items already contain commas.",
         "If you could use a period instead, a semicolon is probably fine."),
        ("how", "write a clear email",
         "Put the main point or request in the first two sentences.",
         "Use a specific subject line that says what the email is about.",
         "Keep paragraphs short and use bullet points for lists of items.",
         "Reread it before sending to fix typos and cut unnecessary words."),
        ("what", "why English spelling is so inconsistent",
         "English borrowed words from many languages, including French, Latin, Greek and Norse.",
         "Pronunciation changed a lot during the Great Vowel Shift, but spelling did not keep"
         " up.",
         "Early printers also introduced spellings that stuck.",
         "As a result, many words keep old spellings that no longer match how they sound."),
    ),
    *_topics(
        "gardening",
        ("how", "grow tomatoes at home",
         "Plant them in a spot that gets at least six to eight hours of direct sun.",
         "Use rich, well-draining soil or a large pot with good compost.",
         "Water deeply and regularly at the base, keeping the leaves dry.",
         "Support the plants with stakes or cages as they grow."),
        ("how", "keep houseplants alive",
         "Check how much light each plant needs and place it accordingly.",
         "Water only when the top inch of soil feels dry, since overwatering kills many plants.",
         "Use pots with drainage holes so roots don't sit in water.",
         "Feed them with a diluted fertilizer during spring and summer."),
        ("what", "what composting is",
         "Composting turns food scraps and garden waste into rich soil.",
         "Microorganisms break the material down when it has the right mix of greens, browns,"
         " air and moisture.",
         "Greens include vegetable peels and grass clippings, while browns include dry leaves"
         " and cardboard.",
         "The finished compost improves soil structure and feeds plants naturally."),
        ("how", "get rid of aphids",
         "Spray the plants with a strong jet of water to knock the aphids off.",
         "Wipe leaves with a mild solution of soapy water or use insecticidal soap.",
         "Encourage natural predators such as ladybugs and lacewings.",
         "Check the undersides of leaves regularly so you catch new infestations early."),
        ("how", "start a vegetable garden",
         "Pick a sunny, level spot close to a water source.",
         "Start small with a few easy crops like lettuce, beans and zucchini.",
         "Improve the soil with compost before planting.",
         "Follow the spacing and planting dates on the seed packets for your area."),
        ("what", "why leaves change color in autumn",
         "Leaves are green because of chlorophyll, which the tree uses to make food.",
         "In autumn, shorter days cause the tree to stop producing chlorophyll.",
         "As the green fades, yellow and orange pigments that were there all along become"
         " visible.",
         "Some trees also make red pigments called anthocyanins in the fall."),
    ),
    *_topics(
        "fitness",
        ("how", "start running as a beginner",
         "Begin with a run-walk plan, such as one minute running and two minutes walking.",
         "Go at an easy pace where you can still hold a conversation.",
         "Run three times a week and increase your total time by no more than about 10 percent"
         " per week.",
         "Get comfortable shoes that fit well and rest if something hurts."),
        ("how", "do a proper push-up",
         "Place your hands slightly wider than shoulder-width apart.",
         "Keep your body in a straight line from head to heels by tightening your core.",
         "Lower your chest until it's just above the floor, keeping your elbows at about 45"
         " degrees.",
         "Push back up smoothly, and start with knee push-ups if full ones are too hard."),
        ("what", "how many days a week I should work out",
         "For general health, aim for about 150 minutes of moderate activity per week.",
         "That could be 30 minutes on five days.",
         "Add strength training for the major muscle groups at least twice a week.",
         "Leave rest days between hard sessions so your body can recover."),
        ("how", "build muscle",
         "Train each muscle group two or three times a week with challenging weights.",
         "Gradually increase the weight or reps over time, which is called progressive"
         " overload.",
         "Eat enough protein, roughly 1.6 grams per kilogram of body weight per day.",
         "Get plenty of sleep, since muscles repair and grow during rest."),
        ("what", "why warming up is important",
         "A warm-up gradually raises your heart rate and body temperature.",
         "Warm muscles are more flexible and less likely to strain.",
         "It also prepares your joints and nervous system for faster movement.",
         "Five to ten minutes of light cardio and dynamic stretches is usually enough."),
        ("how", "improve my flexibility",
         "Stretch most days, even for just ten minutes.",
         "Hold static stretches for 20 to 30 seconds without bouncing.",
         "Try yoga or mobility routines that move joints through their full range.",
         "Be patient, because flexibility improves gradually over weeks."),
    ),
    *_topics(
        "home",
        ("how", "unclog a drain",
         "Start by pouring a kettle of boiling water down the drain.",
         "If that doesn't work, use a plunger with a few centimeters of water in the sink.",
         "A mix of baking soda and vinegar can help loosen grease and grime.",
         "For stubborn clogs, a drain snake can pull out hair and debris."),
        ("how", "remove a red wine stain",
         "Blot the stain right away with a clean cloth instead of rubbing it.",
         "Pour cold water or sprinkle salt on it to draw out the wine.",
         "Treat it with a mix of dish soap and hydrogen peroxide on light fabrics.",
         "Wash the item in cold water and check the stain is gone before drying it."),
        ("how", "paint a room",
         "Move the furniture out or to the middle and cover it and the floor.",
         "Clean the walls, fill any holes and tape off trim and outlets.",
         "Cut in along the edges with a brush, then fill in the larger areas with a roller.",
         "Apply a second coat once the first is dry for even coverage."),
        ("how", "lower my heating bill",
         "Seal drafts around windows and doors with weatherstripping.",
         "Turn the thermostat down a degree or two and wear warmer clothes.",
         "Use a programmable thermostat to lower the heat while you sleep or are out.",
         "Check your insulation, especially in the attic, where a lot of heat escapes."),
        ("how", "fix a squeaky door",
         "Lift the hinge pins out one at a time by tapping them upward.",
         "Clean them and apply a bit of lubricant, like silicone spray or petroleum jelly.",
         "Put the pins back and open and close the door to spread the lubricant.",
         "Tighten any loose hinge screws, which can also cause squeaking."),
        ("how", "organize a messy closet",
         "Take everything out so you can see what you actually own.",
         "Donate or discard things you haven't used in a year.",
         "Group similar items and use bins or shelf dividers for small things.",
         "Store the things you use most at eye level."),
    ),
    *_topics(
        "pets",
        ("how", "house-train a puppy",
         "Take the puppy outside often, especially after waking, eating and playing.",
         "Praise and reward it right after it goes in the correct spot.",
         "Keep a consistent schedule for meals and bathroom breaks.",
         "Clean accidents with an enzyme cleaner and avoid punishing the puppy."),
        ("what", "why cats purr",
         "Cats often purr when they feel content and relaxed.",
         "They also purr when stressed or in pain, which may help soothe them.",
         "Some research suggests the vibrations could even help heal bones and tissues.",
         "Kittens purr to communicate with their mother while nursing."),
        ("how", "introduce a new cat to my dog",
         "Keep them in separate rooms at first so they can get used to each other's smell.",
         "Swap bedding between them before any face-to-face meeting.",
         "Let them see each other through a gate while the dog is on a leash.",
         "Keep early meetings short and calm, and reward both pets for relaxed behavior."),
        ("how", "choose the right food for my dog",
         "Look for food that meets AAFCO or similar standards for your dog's life stage.",
         "Consider your dog's size, age and activity level.",
         "Ask your vet if your dog has allergies, weight issues or health problems.",
         "Switch foods gradually over about a week to avoid upset stomachs."),
        ("what", "how often I should take my dog to the vet",
         "Healthy adult dogs should usually see a vet once a year for a checkup.",
         "Puppies need several visits in their first months for vaccines.",
         "Senior dogs often benefit from checkups every six months.",
         "Go sooner if you notice changes in appetite, energy or behavior."),
        ("how", "take care of a goldfish",
         "Give it a proper tank with a filter, not a small bowl.",
         "Change about a quarter of the water each week using dechlorinated water.",
         "Feed it a small amount once or twice a day, no more than it can eat in two minutes.",
         "Watch for signs of illness like clamped fins or white spots."),
    ),
    *_topics(
        "technology",
        ("how", "make my laptop run faster",
         "Close programs and browser tabs you aren't using.",
         "Remove apps that start automatically when the computer boots.",
         "Free up disk space and uninstall software you no longer need.",
         "Install updates, and consider adding more RAM or an SSD if it's an older machine."),
        ("how", "create a strong password",
         "Use at least 12 to 16 characters.",
         "A passphrase made of several random words is strong and easy to remember.",
         "Never reuse the same password across different sites.",
         "Use a password manager to generate and store unique passwords."),
        ("what", "what cloud storage is",
         "Cloud storage means saving your files on a company's servers, reached over the"
         " internet.",
         "Services like Google Drive, Dropbox and iCloud are common examples.",
         "You can reach your files from any device and share them easily.",
         "It also protects your data if your own device is lost or broken."),
        ("how", "back up my phone",
         "On an iPhone, turn on iCloud Backup in Settings or back up to a computer.",
         "On Android, enable Google backup in the system settings.",
         "Make sure photos are syncing to a cloud service or copied to a computer.",
         "Check the date of the last backup now and then to confirm it is working."),
        ("what", "how Wi-Fi works",
         "Wi-Fi uses radio waves to send data between your device and a wireless router.",
         "The router is connected to the internet through a cable or fiber line.",
         "Your device and the router talk on frequency bands such as 2.4 and 5 gigahertz.",
         "Walls and distance weaken the signal, which is why speed drops in far rooms."),
        ("how", "spot a phishing email",
         "Check the sender's address carefully, since it often doesn't match the real company.",
         "Be suspicious of urgent messages asking you to click a link or share passwords.",
         "Hover over links to see where they actually go before clicking.",
         "When in doubt, contact the company directly using its official website."),
    ),
    *_topics(
        "math",
        ("how", "calculate a percentage",
         "Divide the part by the whole, then multiply by 100.",
         "For example, 15 out of 60 is 15 divided by 60, which is 0.25, or 25 percent.",
         "To find a percentage of a number, multiply the number by the percentage as a"
         " decimal.",
         "So 20 percent of 80 is 0.2 times 80, which is 16."),
        ("what", "what a prime number is",
         "A prime number is a whole number greater than 1 that is divisible only by 1 and"
         " itself.",
         "The first few primes are 2, 3, 5, 7, 11 and 13.",
         "The number 2 is the only even prime.",
         "Numbers with other divisors, like 9 or 12, are called composite."),
        ("how", "find the area of a circle",
         "Use the formula area equals pi times the radius squared.",
         "The radius is half the diameter.",
         "For a radius of 3 centimeters, the area is about 3.14 times 9, or roughly 28.3"
         " square centimeters.",
         "Remember that area is always in square units."),
        ("what", "what the Pythagorean theorem says",
         "It says that in a right triangle, a squared plus b squared equals c squared.",
         "Here c is the hypotenuse, the side opposite the right angle.",
         "For example, a triangle with sides 3 and 4 has a hypotenuse of 5.",
         "It's used to find distances in geometry, construction and navigation."),
        ("how", "solve a simple linear equation",
         "Get the variable alone by doing the same operation to both sides.",
         "For 3x + 5 = 20, subtract 5 from both sides to get 3x = 15.",
         "Then divide both sides by 3 to find x = 5.",
         "Plug the answer back in to check that both sides match."),
        ("what", "the difference between the mean and the median",
         "The mean is the sum of the values divided by how many there are.",
         "The median is the middle value when the numbers are sorted.",
         "For 1, 2 and 9, the mean is 4 but the median is 2.",
         "The median is less affected by very large or very small outliers."),
    ),
    *_topics(
        "nature",
        ("what", "why the ocean is salty",
         "Rain slowly wears down rocks on land, releasing minerals.",
         "Rivers carry those dissolved salts into the sea.",
         "When seawater evaporates, the water leaves but the salt stays behind.",
         "Over millions of years, this has built up to about 3.5 percent salt."),
        ("what", "how volcanoes form",
         "Volcanoes form where molten rock, called magma, rises to the Earth's surface.",
         "Most are found at the edges of tectonic plates, where plates pull apart or one slides"
         " under another.",
         "Some, like Hawaii, form over hot spots in the middle of a plate.",
         "Each eruption adds layers of lava and ash, building the mountain over time."),
        ("what", "what causes earthquakes",
         "Most earthquakes happen when tectonic plates suddenly slip past each other along a"
         " fault.",
         "Stress builds up slowly over years as the plates push against each other.",
         "When the rock finally breaks, the stored energy is released as seismic waves.",
         "The point underground where it starts is called the focus."),
        ("what", "why some animals hibernate",
         "Hibernation helps animals survive winter, when food is scarce and it's cold.",
         "Their heart rate, breathing and body temperature drop sharply to save energy.",
         "They live off fat reserves built up during summer and autumn.",
         "Bears, hedgehogs and some bats are well-known hibernators."),
        ("what", "how tides work",
         "Tides are mainly caused by the Moon's gravity pulling on Earth's oceans.",
         "This creates a bulge of water on the side facing the Moon and another on the"
         " opposite side.",
         "As Earth rotates, most coasts pass through two high and two low tides each day.",
         "The Sun also affects tides, making them stronger at full and new moons."),
        ("what", "what the largest desert in the world is",
         "The largest desert is Antarctica, because a desert is defined by very low"
         " precipitation, not heat.",
         "It covers about 14 million square kilometers.",
         "The largest hot desert is the Sahara in North Africa.",
         "Both receive very little rain or snow each year."),
    ),
    *_topics(
        "careers",
        ("how", "prepare for a job interview",
         "Research the company, its products and its recent news.",
         "Practice answers to common questions, using specific examples from your experience.",
         "Prepare a few thoughtful questions to ask the interviewer.",
         "Plan your outfit and route the day before so you arrive on time and relaxed."),
        ("how", "write a good resume",
         "Keep it to one or two pages with a clean, simple layout.",
         "List achievements with numbers where possible, not just duties.",
         "Tailor it to each job by highlighting the most relevant skills.",
         "Proofread carefully, since typos can cost you an interview."),
        ("how", "ask for a raise",
         "Collect evidence of your results and extra responsibilities.",
         "Look up typical salaries for your role and location.",
         "Schedule a meeting with your manager rather than bringing it up in passing.",
         "State a specific number and be ready to discuss alternatives like extra time off."),
        ("what", "what a cover letter should include",
         "Open by naming the role and briefly saying why you're interested.",
         "Highlight two or three achievements that match what the job asks for.",
         "Show that you understand the company and what it needs.",
         "Close by thanking the reader and inviting them to get in touch."),
        ("how", "manage my time at work",
         "Start each day by listing your top three priorities.",
         "Block time in your calendar for focused work without meetings.",
         "Group small tasks like email into set times instead of checking constantly.",
         "Say no or renegotiate deadlines when your plate is too full."),
        ("how", "switch careers",
         "Figure out which skills from your current job transfer to the new field.",
         "Talk to people already working in that field to learn what it's really like.",
         "Fill gaps with courses, certifications or side projects.",
         "Consider a gradual move, such as freelancing or a related role first."),
    ),
    *_topics(
        "arts",
        ("how", "learn to play guitar",
         "Start with a few basic chords like G, C, D and E minor.",
         "Practice switching between them slowly until the changes are smooth.",
         "Play for 15 to 20 minutes every day rather than long sessions once a week.",
         "Learn simple songs you enjoy to stay motivated."),
        ("how", "take better photos with my phone",
         "Clean the lens, since smudges make pictures blurry.",
         "Use natural light and avoid the harsh flash when you can.",
         "Turn on the grid and place your subject using the rule of thirds.",
         "Tap the screen to focus and adjust exposure before you shoot."),
        ("what", "what makes a painting impressionist",
         "Impressionist paintings capture a moment of light and atmosphere rather than fine"
         " detail.",
         "The artists used quick, visible brush strokes and bright, unmixed colors.",
         "They often painted outdoors to study changing natural light.",
         "Monet, Renoir and Degas are among the best-known impressionists."),
        ("how", "read sheet music",
         "Learn the five lines and four spaces of the staff and the notes they stand for.",
         "In treble clef, the lines from bottom to top are E, G, B, D and F.",
         "Note shapes show duration, such as whole, half and quarter notes.",
         "The time signature tells you how many beats are in each measure."),
        ("how", "start drawing",
         "Practice basic shapes like circles, boxes and cylinders, which build most objects.",
         "Draw from real life as much as you can.",
         "Keep a small sketchbook and draw a little every day.",
         "Study light and shadow to make drawings look three-dimensional."),
        ("what", "why music gives us chills",
         "Chills often come from surprising moments in music, like a sudden key change or a"
         " soaring voice.",
         "These moments trigger the brain's reward system and release dopamine.",
         "Anticipation builds before the peak, making the payoff feel stronger.",
         "People who are more open to new experiences tend to get them more often."),
    ),
    *_topics(
        "cars",
        ("how", "change a flat tire",
         "Park on flat ground, turn on your hazard lights and apply the parking brake.",
         "Loosen the lug nuts slightly before lifting the car with the jack.",
         "Raise the car, remove the nuts and swap the flat for the spare.",
         "Tighten the nuts in a star pattern, lower the car and tighten them fully."),
        ("how", "jump-start a car",
         "Connect the red clamp to the dead battery's positive terminal, then to the good"
         " battery's positive terminal.",
         "Attach the black clamp to the good battery's negative terminal and the other end to"
         " bare metal on the dead car.",
         "Start the working car and let it run for a few minutes before starting the other one.",
         "Remove the cables in the reverse order once the car starts."),
        ("what", "how often I should change my car's oil",
         "Many modern cars need an oil change every 5,000 to 10,000 miles.",
         "Older cars or those using conventional oil may need it every 3,000 miles.",
         "Check your owner's manual for the exact interval for your engine.",
         "Short trips, towing and extreme weather count as severe conditions and shorten the"
         " interval."),
        ("how", "improve my car's fuel efficiency",
         "Keep your tires inflated to the recommended pressure.",
         "Accelerate smoothly and avoid hard braking.",
         "Remove roof racks and extra weight when you don't need them.",
         "Stick to moderate speeds on the highway, since fuel use rises sharply at high speed."),
        ("what", "what the check engine light means",
         "The check engine light means the car's computer has found a problem with the engine"
         " or emissions system.",
         "It can be something minor like a loose gas cap or something serious like a misfire.",
         "A flashing light usually signals a serious problem, so stop driving soon.",
         "A mechanic or an inexpensive code reader can tell you the exact fault code."),
        ("how", "prepare my car for winter",
         "Check the battery, since cold weather makes weak batteries fail.",
         "Switch to winter tires or make sure your all-season tires have good tread.",
         "Top up antifreeze and use winter windshield washer fluid.",
         "Keep an ice scraper, blanket and flashlight in the car."),
    ),
]
