"""Tool-calling and thinking conversations: record layouts read into messages, each family's template
writing tools, calls, results and reasoning (Python and Jinja alike), the loss on exactly what the
assistant writes, the reasoning switch, errors that name the field, and serving's prompt ids equal to
training's."""

import json
from types import SimpleNamespace

import pytest

from erniekit.data.formats import to_chat
from erniekit.data.tokenize import TokenStats, encode_sft
from erniekit.scoring import tool_call
from erniekit.tokenizer import load_tokenizer
from erniekit.tokenizer.templates import chatml, ernie4_5, ernie4_5_thinking, ernie4_5_vl, plain
from erniekit.tokenizer.tools import ReplySplitter, split_reply

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ADD = {"name": "add", "parameters": {"type": "object"}}  # a bare function schema, as glaive lists them
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
CONVO = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "<think>\nNeed the tool.\n</think>\n\n", "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "c1", "content": "30 C"},
    {"role": "assistant", "content": "It is 30 C.", "reasoning_content": "Got it."},
    {"role": "user", "content": "Thanks"},
    {"role": "assistant", "content": "<think>ok</think>You're welcome."},
]


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("samples://ernie_tokenizer")


def trained_text(tok, name, messages, tools=None, keep="last"):
    tok.set_template(name)
    ids, trainable = tok.encode_chat(messages, tools=tools, keep_reasoning=keep)
    return tok.decode([i for i, t in zip(ids, trainable) if t], skip_special=False)


def test_openai_messages_with_tools_and_reasoning_are_read():
    record = {"messages": CONVO, "tools": [WEATHER, ADD]}
    for fmt in ("auto", "messages", "chatml"):  # chatml: ERNIEKit's name for this layout
        messages, tools = to_chat(record, fmt)
        assert tools == [WEATHER, ADD]
        assert messages[2]["tool_calls"] == [CALL] and messages[3] == {"role": "tool", "content": "30 C"}
        assert messages[4]["reasoning_content"] == "Got it."


def test_llamafactory_sharegpt_tool_layout_is_read():
    """glaive_toolcall_en_demo's layout: function_call / observation turns, tools as JSON text."""
    call = {"name": "add", "arguments": {"a": 1, "b": 2}}
    record = {
        "conversations": [
            {"from": "human", "value": "1 + 2?"},
            {"from": "function_call", "value": json.dumps(call)},
            {"from": "observation", "value": '{"sum": 3}'},
            {"from": "gpt", "value": "3."},
            {"from": "human", "value": "Again, politely."},
            {"from": "gpt", "value": "Let me check."},
            {"from": "function_call", "value": json.dumps([call, call])},
            {"from": "observation", "value": "3"},
            {"from": "observation", "value": "3"},
            {"from": "gpt", "value": "Still 3."},
        ],
        "tools": json.dumps([ADD]),
    }
    messages, tools = to_chat(record)
    assert tools == [ADD]
    assert [m["role"] for m in messages] == [
        "user", "assistant", "tool", "assistant", "user", "assistant", "tool", "tool", "assistant",
    ]  # fmt: skip
    assert messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": call}],
    }
    assert messages[5]["content"] == "Let me check." and len(messages[5]["tool_calls"]) == 2  # then calls


# what each family trains on: reasoning the model writes, the calls, replies and the end-of-turn marker;
# never the tools list, the tool results or earlier turns' dropped reasoning
PARIS = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
TRAINED = {
    "chatml": f"{PARIS}<|im_end|>It is 30 C.<|im_end|><think>\nok\n</think>\n\nYou're welcome.<|im_end|>",
    "ernie4_5": (
        f"{PARIS}\n<|end_of_sentence|>It is 30 C.<|end_of_sentence|>"
        "<think>\nok\n</think>\n\nYou're welcome.<|end_of_sentence|>"
    ),
    "ernie4_5_thinking": (  # its prompt opens the reasoning: "<think>\n" is never trained
        f"\n{PARIS}\n<|im_end|><response>\nIt is 30 C.\n</response>\n<|im_end|>"
        "ok\n</think>\n\n<response>\nYou're welcome.\n</response>\n<|im_end|>"
    ),
}


@pytest.mark.parametrize("name", list(TRAINED))
def test_the_loss_is_on_what_the_assistant_writes(tok, name):
    assert trained_text(tok, name, CONVO, [WEATHER, ADD]) == TRAINED[name]
    tok.set_template(name)
    text = tok.template.render_text(CONVO, tools=[WEATHER, ADD])
    assert '"name": "add"' in text and "30 C\n</tool_" in text  # the tools and the result are prompt


@pytest.mark.parametrize("name", list(TRAINED))
def test_keep_reasoning_all_keeps_and_trains_earlier_reasoning(tok, name):
    last = trained_text(tok, name, CONVO, [WEATHER], keep="last")
    kept = trained_text(tok, name, CONVO, [WEATHER], keep="all")
    assert "Need the tool." not in last and "Got it." not in last
    assert "Need the tool.\n</think>\n\n" in kept and "Got it.\n</think>\n\n" in kept


def test_ernie_thinking_layout():
    text = ernie4_5_thinking().render_text(CONVO[1:4], add_generation_prompt=True, tools=[WEATHER])
    setting = "<global_setting>\nthink_mode=True\n</global_setting>"
    assert text.startswith(f"<|im_start|>system\n{setting}\n\n<tool_list>\n[")
    result = "<|im_start|>user\n<tool_response>\n30 C\n</tool_response><|im_end|>\n\n"
    assert text.endswith(result + "<|im_start|>assistant\n<think>\n")
    with_system = ernie4_5_thinking().render_text(CONVO[:2], add_generation_prompt=True)
    assert with_system.startswith("<|im_start|>system\n<system_setting>\nBe brief.\n</system_setting>\n\n")


def test_templates_render_like_their_jinja():
    """Exported chat_template (rendered as transformers renders it) == our text, tools and all."""
    from transformers.utils.chat_template_utils import render_jinja_template

    convos = [(CONVO, False), (CONVO[:4], True), (CONVO[1:], False), (CONVO[1:3], False), (CONVO[:2], True)]
    for template in (ernie4_5(), ernie4_5_thinking(), ernie4_5_vl(), chatml(), chatml("Sys."), plain("</s>")):
        for messages, gen in convos:
            for tools in (None, [WEATHER, ADD]):
                for keep in ("last", "all"):
                    (want,), _ = render_jinja_template(
                        conversations=[messages],
                        chat_template=template.jinja,
                        tools=tools,
                        add_generation_prompt=gen,
                        keep_reasoning=keep,
                    )
                    got = template.render_text(messages, gen, tools, keep)
                    assert got == want, (template.name, len(messages), gen, bool(tools), keep)


USER = {"role": "user", "content": "a"}


def calling(*calls):
    return {"role": "assistant", "content": "", "tool_calls": list(calls)}


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([USER, {"role": "tool", "content": "r"}], "message 1 is a tool result, but message 0 made no"),
        ([USER, calling(CALL), USER], "message 2 has role 'user' where 'tool' belongs"),
        ([USER, calling({"function": {"name": "f", "arguments": "{bad"}})],
         r"message 1: tool_calls\[0\].function.arguments is not valid JSON"),
        ([USER, calling({"arguments": {}})], r"message 1: tool_calls\[0\] needs a 'name' string"),
        ([USER, calling({"name": "f", "arguments": "[1]"})],
         r"message 1: tool_calls\[0\].arguments must be a JSON object"),
    ],
)  # fmt: skip
def test_malformed_tool_conversations_name_the_field(tok, messages, error):
    tok.set_template("ernie4_5")
    with pytest.raises(ValueError, match=error):
        tok.encode_chat(messages)


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ({"messages": CONVO, "tools": "[{"}, "field 'tools' is not valid JSON"),
        ({"messages": CONVO, "tools": [{"description": "no name"}]}, r"tools\[0\] must be a function schema"),
        ({"conversations": [{"from": "human", "value": "a"}, {"from": "function_call", "value": "{x"}]},
         r"message 1 \(function_call\) is not valid JSON"),
    ],
)  # fmt: skip
def test_malformed_records_name_the_field(record, error):
    with pytest.raises(ValueError, match=error):
        to_chat(record)


def test_turn_truncation_drops_whole_tool_turns(tok):
    tok.set_template("chatml")
    stats = TokenStats()
    full = len(tok.encode_chat(CONVO, tools=[WEATHER])[0])
    pair = encode_sft(tok, CONVO, full - 2, "turns", stats, [WEATHER])
    kept = tok.decode(pair[0], skip_special=False)
    assert "Paris" not in kept and "Thanks" in kept and '"get_weather"' in kept  # the tools stay
    assert stats.truncated == 1


@pytest.mark.parametrize("name", ["ernie4_5", "ernie4_5_thinking", "chatml"])
def test_serving_encodes_the_prompt_as_training_does(tok, name):
    """The server's prompt for a conversation is, token for token, what training puts before the reply."""
    from erniekit.serve.app import Server

    tok.set_template(name)
    record = {"messages": CONVO, "tools": [WEATHER]}  # a request's tools: OpenAI's wrapped schemas
    messages, tools = to_chat(record)
    ids, trainable = tok.encode_chat(messages, tools=tools)
    reply_starts = [i for i in range(1, len(ids)) if trainable[i] and not trainable[i - 1]]
    engine = SimpleNamespace(model=SimpleNamespace(args=SimpleNamespace(family="ernie4_5", vision=None)))
    server = Server(engine, tok)
    body = {"messages": CONVO[:-1], "tools": [WEATHER]}
    prompt, _, _ = server.encode_chat(body)
    assert prompt == ids[: reply_starts[-1]]


F = '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>'
RESPONSE_REPLIES = [  # ERNIE 4.5 Thinking: the reply opens inside the reasoning and wraps its text
    ("Easy.\n</think>\n\n<response>\nIt is 30 C.\n</response>\n", ("Easy.", "It is 30 C.", [])),
    (f"Call it.\n</think>\n\n\n{F}\n", ("Call it.", None, ["f"])),
    ("\n</think>\n\n<response>\nA <b>bold</b> reply.\n</response>\n", (None, "A <b>bold</b> reply.", [])),
]


@pytest.mark.parametrize("text, want", RESPONSE_REPLIES)
def test_response_tags_are_read_out_whole_and_streamed(text, want):
    reasoning, content, calls = split_reply(text, thinking=True, tools=True, response_tags=True)
    assert (reasoning, content, [c["name"] for c in calls]) == want
    for size in (1, 2, 3, 5):
        splitter, events = ReplySplitter(True, True, True), []
        for at in range(0, len(text), size):
            events += splitter.feed(text[at : at + size])
        events += splitter.finish()
        assert "".join(t for k, t in events if k == "content").strip("\n") == (want[1] or "")


def emitted(name, arguments):
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


@pytest.mark.parametrize(
    ("completion", "answer", "score"),
    [
        (emitted("f", {"a": 1, "b": [2]}), {"name": "f", "arguments": {"b": [2], "a": 1}}, 1.0),
        (emitted("f", {"a": 2}), {"name": "f", "arguments": {"a": 1}}, 0.0),
        (emitted("g", {"a": 1}), {"name": "f", "arguments": {"a": 1}}, 0.0),
        (emitted("f", {}) + emitted("f", {}), {"name": "f", "arguments": {}}, 0.0),  # one call too many
        ('{"name": "f", "arguments": "{\\"a\\": 1}"}', '{"name": "f", "arguments": {"a": 1}}', 1.0),  # bare
        ("x</think>\n\n" + emitted("f", {}), {"type": "function", "function": {"name": "f"}}, 1.0),
        ("The answer is 3.", None, 1.0),  # no call expected, none made
        ("The answer is 3.", {"name": "f", "arguments": {}}, 0.0),
        ("<tool_call>not json</tool_call>", {"name": "f", "arguments": {}}, 0.0),
    ],
)  # fmt: skip
def test_tool_call_scorer(completion, answer, score):
    assert tool_call(completion, answer, {}) == score
