"""The wording demo preference pairs are composed from.

Question phrasings, openers and closers make the answers; evasions and insults flaw the rejected
ones. preference_data splits every list between training and held-out pairs.
"""

HOW_QUESTIONS = [
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

WHAT_QUESTIONS = [
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

LEAD_INS = [
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

OPENERS = [
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

HOW_LIST_INTROS = [
    "Here's how to {t}:",
    "Sure, here are the steps:",
    "You can do it like this:",
    "Here's a simple way to {t}:",
    "Follow these steps:",
    "Here's what works well:",
    "Try this:",
    "To {t}, do the following:",
]

WHAT_LIST_INTROS = [
    "Here are the key points:",
    "Here's the short version:",
    "In a nutshell:",
    "Here's what's going on:",
    "The main ideas are:",
    "Sure, here's an overview:",
    "Good question. Briefly:",
    "Here's an explanation:",
]

CLOSERS = [
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

CONNECTORS = [
    "Also,",
    "On top of that,",
    "Besides that,",
    "Beyond that,",
    "In addition,",
    "It also helps to know that",
    "Another point:",
    "What's more,",
]

EVASIONS = [
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

EVASION_ENDS = [
    "Maybe ask someone else.",
    "Let's talk about something else.",
    "Is there anything else?",
    "Perhaps look elsewhere.",
    "Try another question.",
    "Sorry about that.",
    "Let's move on.",
    "You could try a different source.",
]

INSULTS = [
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

INSULT_ENDS = [
    "Go away.",
    "Whatever.",
    "Use your brain.",
    "Don't ask me again.",
    "Seriously.",
    "Leave me alone.",
    "Come on.",
    "Unbelievable.",
]
