"""OpenRLHF's queries, cleaned of the padding its trainers decode into them.

OpenRLHF up to 0.8.2 decodes whole padded batches (`batch_decode(sequences,
skip_special_tokens=False)`), so a query arrives as `<pad><pad>prompt response<eos><pad>`; its
own reward server stripped those strings. Later versions remove the padding before decoding.
rmserve strips, driven by the model's tokenizer, so that the same query scores the same with and
without pads: leading and trailing pad and EOS strings are removed, then one EOS is put back where
the stripped tail held one (a generation that finished, as the model was trained to see it). A
model without an EOS token (BERT-style: its tokenizer adds [SEP] itself) gets none back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.scoring.registry import ServedModel


@dataclass(frozen=True)
class PaddingTokens:
    """A model's pad and EOS strings."""

    pad: str | None
    eos: str | None

    def strip(self, text: str) -> str:
        """`text` without its leading and trailing pads and EOS; one EOS back if its tail held one."""
        tokens = sorted({t for t in (self.pad, self.eos) if t}, key=len, reverse=True)
        if not tokens:
            return text
        run = "(?:" + "|".join(re.escape(t) for t in tokens) + ")+"  # re caches the compiled pattern
        text = re.sub(f"^{run}", "", text, count=1)
        tail = re.search(rf"{run}\Z", text)  # \Z, not $: $ also matches before a final newline
        if tail is None:
            return text
        # Where pad and EOS are one token, any trailing pad may be the EOS a generation ended with.
        ended = bool(self.eos) and (self.eos in tail.group() or self.pad == self.eos)
        return text[: tail.start()] + ((self.eos or "") if ended else "")


def padding_tokens(served: ServedModel) -> PaddingTokens:
    """The served model's pad and EOS strings, from its tokenizer."""
    # InputFormatter keeps its tokenizer private; only this route needs the tokenizer's special
    # strings, so they are read here rather than added to the scoring core's interface.
    tokenizer = served.formatter.tokenizer
    return PaddingTokens(pad=getattr(tokenizer, "pad_token", None), eos=getattr(tokenizer, "eos_token", None))
