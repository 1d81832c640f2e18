"""TRL reward functions without a server: what messages become on the wire, how TRL tells the
async one apart, and that both pickle."""

from __future__ import annotations

import inspect
import json
import pickle

import pytest

from rmserve_client import AsyncRmserveReward, RmserveReward
from rmserve_client.trl import trl_items, wire_message


def test_content_parts_are_joined_into_text_as_chat_templates_join_them() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "Capital of "},
                                           {"type": "text", "text": "France?"}]}
    assert wire_message(message) == {"role": "user", "content": "Capital of France?"}
    assert wire_message({"role": "user", "content": []}) == {"role": "user", "content": ""}


def test_tool_calls_become_json_lines_after_the_content() -> None:
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}
    only_calls = {"role": "assistant", "content": None, "tool_calls": [call, call]}
    line = json.dumps({"name": "weather", "arguments": {"city": "Paris"}})
    assert wire_message(only_calls) == {"role": "assistant", "content": f"{line}\n{line}"}
    with_text = {"role": "assistant", "content": "Let me look.", "tool_calls": [call]}
    assert wire_message(with_text)["content"] == f"Let me look.\n{line}"
    # A tool's answer keeps its role and content; its name and call id are not sent.
    tool = {"role": "tool", "name": "weather", "tool_call_id": "1", "content": "18 C"}
    assert wire_message(tool) == {"role": "tool", "content": "18 C"}


def test_parts_that_are_not_text_are_refused_not_dropped() -> None:
    with pytest.raises(ValueError, match="'image' content part"):
        wire_message({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]})
    with pytest.raises(TypeError, match="string or a list of parts"):
        wire_message({"role": "user", "content": 3})


def test_trl_items_send_conversations_as_messages_and_plain_pairs_as_pairs() -> None:
    prompts = [[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "Plain?"]
    completions = [[{"role": "assistant", "content": "Hello!"}], "Yes."]
    assert trl_items(prompts, completions) == [
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
        {"prompt": "Plain?", "response": "Yes."},
    ]
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        trl_items(prompts, completions[:1])


def test_the_async_function_is_a_coroutine_function_to_every_trl() -> None:
    reward = AsyncRmserveReward("http://127.0.0.1:1", name="rm")
    assert inspect.iscoroutinefunction(reward)  # TRL 1.0-1.15: the object itself
    assert inspect.iscoroutinefunction(reward.__call__)  # TRL 1.16: the object or its __call__
    assert list(inspect.signature(reward).parameters) == ["prompts", "completions", "kwargs"]
    assert reward.__name__ == "rm"
    assert not inspect.iscoroutinefunction(RmserveReward("http://127.0.0.1:1"))


@pytest.mark.parametrize("kind", [RmserveReward, AsyncRmserveReward])
def test_both_functions_pickle_with_their_settings(kind: type) -> None:
    reward = kind("grpc://127.0.0.1:1", model="rm", name="mine", api_key="k" * 20, timeout_s=3.0)
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.__name__ == "mine"
    assert copy._options == {"model": "rm", "api_key": "k" * 20, "timeout_s": 3.0}
    assert copy._client is None  # made on the first call in the process that unpickled it
    assert inspect.iscoroutinefunction(copy) == (kind is AsyncRmserveReward)
