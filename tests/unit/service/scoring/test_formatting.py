"""Truncation keeps what is judged: the prompt loses tokens from its left first."""

from __future__ import annotations

from pathlib import Path

from service.loading import load_tokenizer
from service.scoring.formatting import InputFormatter
from service.scoring.items import PromptResponse, RawText


def formatter(folder: Path, max_length: int) -> tuple[InputFormatter, object]:
    tokenizer = load_tokenizer(folder)
    return InputFormatter(tokenizer, max_length), tokenizer


def test_text_pair_cuts_the_prompt_from_the_left(tiny_model_dirs) -> None:
    fmt, tok = formatter(tiny_model_dirs["bert-right"], 12)
    item = fmt.format([PromptResponse("one two three four five six seven eight", "good answer")])[0]
    assert item.truncated and len(item.pair) == 12
    text = tok.decode(item.pair.input_ids)
    assert text == "[CLS] two three four five six seven eight [SEP] good answer [SEP]"


def test_response_is_cut_from_the_right_once_the_prompt_is_gone(tiny_model_dirs) -> None:
    fmt, tok = formatter(tiny_model_dirs["bert-right"], 6)
    item = fmt.format([PromptResponse("a b c", "one two three four five")])[0]
    assert tok.decode(item.pair.input_ids) == "[CLS] [SEP] one two three [SEP]"


def test_chat_template_scaffolding_survives_truncation(tiny_model_dirs) -> None:
    fmt, tok = formatter(tiny_model_dirs["llama-left"], 30)
    long_prompt = " ".join(["hello"] * 50)
    item = fmt.format([PromptResponse(long_prompt, "good answer")])[0]
    text = tok.decode(item.pair.input_ids)
    assert item.truncated and len(item.pair) == 30
    assert text.startswith("<s>[INST]") and text.endswith("[/INST] good answer </s>")


def test_short_inputs_are_untouched_and_match_the_tokenizer(tiny_model_dirs) -> None:
    fmt, tok = formatter(tiny_model_dirs["bert-right"], 96)
    item = fmt.format([PromptResponse("hello", "world")])[0]
    assert not item.truncated
    assert list(item.pair.input_ids) == tok("hello", "world")["input_ids"]
    assert list(item.pair.token_type_ids) == tok("hello", "world")["token_type_ids"]


def test_raw_text_keeps_its_end_and_gets_bos_once(tiny_model_dirs) -> None:
    fmt, tok = formatter(tiny_model_dirs["llama-left"], 8)
    item = fmt.format([RawText("<s>" + " ".join(["why"] * 20) + " because")])[0]
    assert item.truncated and item.pair.input_ids.count(tok.bos_token_id) == 1
    assert tok.decode(item.pair.input_ids).endswith("because")
