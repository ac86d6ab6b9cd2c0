"""ERNIE's reply format read back into reasoning, content and tool calls, whole or streamed in any
pieces; OpenAI tool messages rendered into turns the chat templates take."""

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from erniekit.tokenizer.tools import ReplySplitter, render_tools, split_reply

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
REPLIES = [
    ("Hello there.", False, False, (None, "Hello there.", [])),
    ("<think>It is hot.</think>\n\nIt is 30 C.", False, False, ("It is hot.", "It is 30 C.", [])),
    ("The user asks.\n</think>\n\nSure.", True, False, ("The user asks.", "Sure.", [])),
    (f"Let me check.</think>\n\n{CALL}\n", True, True, ("Let me check.", None, ["get_weather"])),
    (f"Checking.\n{CALL}", False, True, (None, "Checking.", ["get_weather"])),
    (f"{CALL}{CALL}", False, True, (None, None, ["get_weather", "get_weather"])),
    (CALL, False, False, (None, CALL, [])),  # no tools offered: the text is content
    ("<tool_call>not json</tool_call>", False, True, (None, "<tool_call>not json</tool_call>", [])),
    ('<tool_call>{"name": "f"', False, True, (None, '<tool_call>{"name": "f"', [])),  # unclosed
]


@pytest.mark.parametrize("text, thinking, tools, want", REPLIES)
def test_split_reply(text, thinking, tools, want):
    reasoning, content, calls = split_reply(text, thinking, tools)
    assert (reasoning, content, [c["name"] for c in calls]) == want
    for c in calls:
        assert json.loads(c["arguments"]) == {"city": "Paris"}


@settings(max_examples=400, deadline=None)
@example(REPLIES[4], [1, 1, 4, 7, 7])  # a newline streamed before the tool call it leads into
@given(st.sampled_from(REPLIES), st.lists(st.integers(1, 7), min_size=1, max_size=40))
def test_streamed_in_any_pieces_equals_whole(case, cuts):
    text, thinking, tools, _ = case
    splitter, events, at = ReplySplitter(thinking, tools), [], 0
    for n in cuts:
        events += splitter.feed(text[at : at + n])
        at += n
    events += splitter.feed(text[at:]) + splitter.finish()
    whole = ReplySplitter(thinking, tools)
    want = whole.feed(text) + whole.finish()

    def joined(evs, kind):
        return "".join(t for k, t in evs if k == kind)

    assert joined(events, "content") == joined(want, "content")
    assert joined(events, "reasoning") == joined(want, "reasoning")
    assert [t for k, t in events if k == "tool_call"] == [t for k, t in want if k == "tool_call"]


def test_render_tools_into_plain_turns():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "30 C"},
        {"role": "tool", "tool_call_id": "c2", "content": "sunny"},
    ]
    out = render_tools(messages, tools)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.\n\n") and '"name": "get_weather"' in out[0]["content"]
    assert split_reply(out[2]["content"], tools=True)[2][0]["name"] == "get_weather"
    assert (
        out[3]["content"]
        == "<tool_response>\n30 C\n</tool_response>\n<tool_response>\nsunny\n</tool_response>"
    )
    assert render_tools(messages[:2], None) == messages[:2]
