"""Tool calling and thinking in replies, read back.

A reply may open with reasoning that ends at ``</think>`` (ERNIE 4.5's thinking models, whose prompt
opens it; a reply that starts with ``<think>`` is read the same way), may wrap its visible text in
``<response>...</response>`` (ERNIE 4.5 Thinking), and calls a function as a JSON object inside
``<tool_call>...</tool_call>`` (ERNIE and Qwen/ChatML alike)::

    The user wants the weather.</think>

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

``ReplySplitter`` reads a reply back, whole or piece by piece as it streams, into reasoning, content and
tool calls. The chat templates (erniekit.tokenizer.templates) write tools, calls and results in each
family's own format; ``render_tools`` is the plain, template-independent rendering into
system/user/assistant turns (tools listed in the system turn, results as ``<tool_response>`` user turns).
"""

from __future__ import annotations

import contextlib
import json
import uuid

THINK_START, THINK_END = "<think>", "</think>"
CALL_START, CALL_END = "<tool_call>", "</tool_call>"
RESPONSE_START, RESPONSE_END = "<response>", "</response>"


def tools_prompt(tools: list[dict]) -> str:
    listed = "\n".join(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools)
    return (
        "You can call these functions (JSON schemas):\n<tools>\n"
        f"{listed}\n</tools>\n"
        f'To call one, reply with {CALL_START}\n{{"name": NAME, "arguments": {{...}}}}\n{CALL_END}'
    )


def _call_text(call: dict) -> str:
    fn = call.get("function", call)
    args = fn.get("arguments", {})
    if isinstance(args, str):
        with contextlib.suppress(json.JSONDecodeError):
            args = json.loads(args)
    return (
        f"{CALL_START}\n{json.dumps({'name': fn['name'], 'arguments': args}, ensure_ascii=False)}\n{CALL_END}"
    )


def render_tools(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """OpenAI messages with tools -> plain system/user/assistant turns (consecutive tool results become
    one user turn)."""
    out: list[dict] = []
    if tools:
        block = tools_prompt(tools)
        if messages and messages[0]["role"] == "system":
            system = messages[0].get("content") or ""
            out.append({"role": "system", "content": f"{system}\n\n{block}" if system else block})
            messages = messages[1:]
        else:
            out.append({"role": "system", "content": block})
    for m in messages:
        if m["role"] == "assistant" and m.get("tool_calls"):
            calls = "\n".join(_call_text(c) for c in m["tool_calls"])
            text = m.get("content") or ""
            out.append({"role": "assistant", "content": f"{text}\n{calls}" if text else calls})
        elif m["role"] == "tool":
            result = f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"
            if out and out[-1]["role"] == "user" and out[-1].get("_tool"):
                out[-1]["content"] += "\n" + result
            else:
                out.append({"role": "user", "content": result, "_tool": True})
        else:
            out.append({k: v for k, v in m.items() if k in ("role", "content")})
    return [{k: v for k, v in m.items() if k != "_tool"} for m in out]


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ReplySplitter:
    """Reads a reply, fed in pieces, into ("reasoning", text), ("content", text) and ("tool_call", {"name",
    "arguments"}) events. ``thinking``: the reply starts inside the reasoning (the prompt opened it);
    otherwise a reply that begins with ``<think>`` does. With ``tools`` false, ``<tool_call>`` is content.
    ``response_tags``: ``<response>`` tags around the text are dropped. Text that may be the start of a
    marker is held back until the next piece tells."""

    def __init__(self, thinking: bool = False, tools: bool = False, response_tags: bool = False):
        self.tools, self.response_tags = tools, response_tags
        self.state = "reasoning" if thinking else "start"
        self.buffer = ""
        self.strip_newlines = True  # content starts (and restarts after a tool call) without blank lines

    def feed(self, text: str) -> list[tuple[str, object]]:
        self.buffer += text
        events: list[tuple[str, object]] = []
        while True:
            before = (self.state, len(self.buffer))
            getattr(self, f"_{self.state}")(events, final=False)
            if (self.state, len(self.buffer)) == before:
                return events

    def finish(self) -> list[tuple[str, object]]:
        events: list[tuple[str, object]] = []
        while self.buffer:
            before = (self.state, len(self.buffer))
            getattr(self, f"_{self.state}")(events, final=True)
            if (self.state, len(self.buffer)) == before:
                break
        if self.buffer:  # an unclosed tool call is plain content
            self._emit(events, "content", self.buffer)
            self.buffer = ""
        return events

    def _emit(self, events: list, kind: str, text: str) -> None:
        if kind == "content" and self.strip_newlines:
            text = text.lstrip("\n")
            self.strip_newlines = not text
        if text:
            if events and events[-1][0] == kind and kind != "tool_call":
                events[-1] = (kind, events[-1][1] + text)
            else:
                events.append((kind, text))

    def _start(self, events: list, final: bool) -> None:
        head = self.buffer.lstrip()
        if head.startswith(THINK_START):
            self.buffer, self.state = head[len(THINK_START) :], "reasoning"
        elif final or (len(head) >= len(THINK_START) or not THINK_START.startswith(head)):
            self.state = "content"

    def _reasoning(self, events: list, final: bool) -> None:
        if self.buffer.lstrip().startswith(THINK_START):
            self.buffer = self.buffer.lstrip()[len(THINK_START) :]
        end = self.buffer.find(THINK_END)
        if end >= 0:
            self._emit(events, "reasoning", self.buffer[:end])
            self.buffer, self.state = self.buffer[end + len(THINK_END) :], "content"
            return
        keep = 0 if final else len(THINK_END) - 1
        cut = max(len(self.buffer) - keep, 0)
        self._emit(events, "reasoning", self.buffer[:cut])
        self.buffer = self.buffer[cut:]
        if final:  # the reply ended while thinking
            self.state = "content"

    def _content(self, events: list, final: bool) -> None:
        markers = [CALL_START] * self.tools + [RESPONSE_START, RESPONSE_END] * self.response_tags
        if not markers:
            self._emit(events, "content", self.buffer)
            self.buffer = ""
            return
        found = [(at, m) for m in markers if (at := self.buffer.find(m)) >= 0]
        if found:
            start, marker = min(found)
            after = self.buffer[start + len(marker) :]
            if marker == CALL_START:
                self._emit(events, "content", self.buffer[:start].rstrip("\n"))
                self.buffer, self.state = self.buffer[start:], "call"
            elif marker == RESPONSE_START:
                self._emit(events, "content", self.buffer[:start])
                if not after and not final:  # the newline after the tag is not here yet
                    self.buffer = self.buffer[start:]
                else:
                    self.buffer = after.removeprefix("\n")
            else:
                self._emit(events, "content", self.buffer[:start].rstrip("\n"))
                self.buffer, self.strip_newlines = after, True
            return
        keep = 0 if final else max(len(m) for m in markers) - 1
        cut = max(len(self.buffer) - keep, 0)
        while not final and cut and self.buffer[cut - 1] == "\n":  # newlines may lead into a tool call
            cut -= 1
        self._emit(events, "content", self.buffer[:cut])
        self.buffer = self.buffer[cut:]

    def _call(self, events: list, final: bool) -> None:
        end = self.buffer.find(CALL_END)
        if end < 0:
            return
        body = self.buffer[len(CALL_START) : end]
        self.buffer, self.state = self.buffer[end + len(CALL_END) :], "content"
        self.strip_newlines = True
        try:
            call = json.loads(body)
            name, args = call["name"], call.get("arguments", {})
        except (json.JSONDecodeError, KeyError, TypeError):
            self._emit(events, "content", f"{CALL_START}{body}{CALL_END}")
            return
        arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        events.append(("tool_call", {"name": str(name), "arguments": arguments}))


def split_reply(
    text: str, thinking: bool = False, tools: bool = False, response_tags: bool = False
) -> tuple[str | None, str | None, list]:
    """(reasoning, content, tool calls) of a whole reply."""
    splitter = ReplySplitter(thinking, tools, response_tags)
    events = splitter.feed(text) + splitter.finish()
    reasoning = "".join(t for k, t in events if k == "reasoning").strip("\n") or None
    content = "".join(t for k, t in events if k == "content")
    calls = [t for k, t in events if k == "tool_call"]
    return reasoning, (content.strip("\n") or None) if calls or reasoning else content, calls
