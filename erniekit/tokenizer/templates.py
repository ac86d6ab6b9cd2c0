"""Chat templates: messages -> text segments marked trainable or not.

Each template renders the same text as its Jinja form (shipped in ``tokenizer_config.json`` so other
tools format prompts identically; tests check the two agree). Rendering as segments lets the data
pipeline put the loss on exactly what the assistant produces: its replies, their end-of-turn token,
its reasoning and its tool calls; never prompts, tool results or the tools list.

Messages follow OpenAI's chat format:

* ``{"role": "system"|"user", "content": str}``; for vision-language templates the content may also be
  a list of parts, ``{"type": "text", "text": ...}``, ``{"type": "image", "image": PATH}`` (or OpenAI's
  ``{"type": "image_url", "image_url": {"url": ...}}``) and ``{"type": "video", "video": [frames]}``:
  each image renders as the template's marker (its placeholder once; the caller repeats it per token).
* ``{"role": "assistant", "content": str | None, "reasoning_content"?: str, "tool_calls"?: [...],
  "loss"?: bool}``: reasoning may instead open the content as ``<think>...</think>``; a tool call is
  ``{"type": "function", "function": {"name", "arguments": object or its JSON text}}`` (or just
  ``{"name", "arguments"}``); ``"loss": false`` excludes the turn from the loss.
* ``{"role": "tool", "content": ...}``: a tool's result (any JSON value; non-strings are written as JSON),
  answering the assistant message before it. Consecutive results share one turn.

The conversation's ``tools`` (OpenAI function schemas) are listed in the system turn. Each family writes
tools, calls, results and reasoning its own way (``ToolStyle``): ChatML as Qwen3's template does, ERNIE
4.5's ``User:/Assistant:`` layout as ERNIE's function-call data does, ERNIE 4.5 Thinking with its
``<|im_start|>`` turns, ``<response>`` tags and a reply that opens inside the reasoning.

Reasoning of assistant turns before the last user message is dropped from the text, as the thinking
models' own templates render history (``keep_reasoning="last"``); ``"all"`` keeps (and trains) it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Literal

ROLES = ("system", "user", "assistant", "tool")
KEEP_REASONING = ("last", "all")


@dataclass(frozen=True)
class Segment:
    text: str
    trainable: bool
    reply: bool = False  # an assistant reply: tokenized on its own, so a prompt tokenizes as in training


@dataclass(frozen=True)
class ToolStyle:
    """How a family writes the tools list, an assistant's reasoning and calls, and tool results."""

    tools_head: str  # the tools text: head, the schemas joined by tools_sep, tail
    tools_tail: str
    tools_sep: str = "\n"
    listed: Literal["as_given", "wrapped", "function"] = "as_given"  # each schema as given, wrapped in
    # {"type": "function", "function": ...} (ERNIE), or the function object alone
    system_join: str = "\n\n"  # between a system prompt and the tools text
    call: str = "<tool_call>\n{call}\n</tool_call>"  # {call}: {"name": ..., "arguments": ...}
    call_sep: str = "\n"
    call_lead: tuple[str, str] = ("\n", "")  # before the first call: after reply text, with none
    calls_end: str = ""  # after the last call
    result: str = "<tool_response>\n{content}\n</tool_response>"
    result_sep: str = "\n"
    think: tuple[str, str] = ("<think>\n", "\n</think>\n\n")  # around the reasoning
    think_in_prompt: bool = False  # a thinking model: the generation prompt opens the reasoning
    response: str = "{content}"  # how the visible reply is written

    def tools_text(self, tools: list[dict]) -> str:
        return self.tools_head + self.tools_sep.join(_listed(t, self.listed) for t in tools) + self.tools_tail


def _listed(tool: dict, how: str) -> str:
    if how == "wrapped" and tool.get("type") != "function":
        tool = {"type": "function", "function": tool}
    elif how == "function":
        tool = tool.get("function", tool)
    return _json(tool)


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # as transformers' Jinja ``tojson`` writes it


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    prefix: str  # once, before everything (e.g. the BOS marker)
    system: str  # format with {content} (and {tools}, when the tools sit apart from the prompt)
    user: str
    assistant_open: str  # before an assistant reply (part of the prompt)
    assistant_close: str  # after the reply: the end-of-turn marker, trained so the model learns to stop
    after_close: str = ""  # text after the end-of-turn marker (not trained)
    default_system: str | None = None
    jinja: str = ""
    image: str = ""  # how an image part renders ({index} counts images from 1); "" takes no images
    video: str = ""
    media_first: bool = False  # a turn's images come before its text, whatever the parts' order
    tools: ToolStyle | None = None
    no_system: str | None = None  # the system turn of a conversation without one ({tools} = tools text)

    @property
    def opens_thinking(self) -> bool:
        """Replies start inside the reasoning (the generation prompt opened it)."""
        return bool(self.tools and self.tools.think_in_prompt)

    @property
    def response_tags(self) -> bool:
        """Replies wrap their visible text in <response> tags."""
        return bool(self.tools and self.tools.response.startswith("<response>"))

    def render(
        self,
        messages: list[dict],
        add_generation_prompt: bool = False,
        tools: list[dict] | None = None,
        keep_reasoning: str = "last",
    ) -> list[Segment]:
        check_messages(messages, allow_open=add_generation_prompt, media=bool(self.image))
        if keep_reasoning not in KEEP_REASONING:
            raise ValueError(f"keep_reasoning is {keep_reasoning!r}; expected one of {KEEP_REASONING}")
        style = self.tools or PLAIN_TOOLS
        counts = {"image": 0, "video": 0}
        segs = [Segment(self.prefix, False)] if self.prefix else []
        has_system = messages[0]["role"] == "system"
        system = self._content(messages[0]["content"], counts) if has_system else None
        segs.append(Segment(self._system(system, style.tools_text(tools) if tools else ""), False))
        last_query = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
        results: list[str] = []
        for i, m in enumerate(messages):
            if i == 0 and has_system:
                continue
            if m["role"] == "user":
                segs.append(Segment(self.user.format(content=self._content(m["content"], counts)), False))
            elif m["role"] == "tool":
                results.append(style.result.format(content=_tool_content(m["content"])))
                if i + 1 == len(messages) or messages[i + 1]["role"] != "tool":
                    segs.append(Segment(self.user.format(content=style.result_sep.join(results)), False))
                    results = []
            else:
                current = i > last_query or keep_reasoning == "all"
                segs += self._assistant(i, m, style, current, counts, i > last_query)
        if add_generation_prompt:
            opening = self.assistant_open + (style.think[0] if style.think_in_prompt else "")
            segs.append(Segment(opening, False))
        return _merge(segs)

    def render_text(
        self,
        messages: list[dict],
        add_generation_prompt: bool = False,
        tools: list[dict] | None = None,
        keep_reasoning: str = "last",
    ) -> str:
        return "".join(s.text for s in self.render(messages, add_generation_prompt, tools, keep_reasoning))

    def _system(self, content: str | None, tools_text: str) -> str:
        if content is None and self.no_system is not None:
            return self.no_system.format(tools=tools_text)
        if "{tools}" in self.system:
            return self.system.format(content=content, tools=tools_text)
        content = self.default_system if content is None else content
        if tools_text:
            style = self.tools or PLAIN_TOOLS
            content = f"{content}{style.system_join}{tools_text}" if content else tools_text
        return "" if content is None else self.system.format(content=content)

    def _assistant(
        self, i: int, m: dict, style: ToolStyle, keep: bool, counts: dict, current: bool
    ) -> list[Segment]:
        content, reasoning, calls = assistant_parts(i, m)
        content = self._content(content, counts)
        opened = self.assistant_open
        body = ""
        # a thinking model writes the reasoning block in every turn of the current answer (empty if
        # none), others only where there is reasoning to keep
        if (style.think_in_prompt and current) or (reasoning and keep):
            if style.think_in_prompt:
                opened += style.think[0]
            else:
                body += style.think[0]
            body += reasoning + style.think[1]
            content = content.lstrip("\n")
        if content or not calls:
            body += style.response.format(content=content)
        if calls:
            body += style.call_lead[0 if content else 1]
            body += style.call_sep.join(style.call.format(call=c) for c in calls) + style.calls_end
        segs = [
            Segment(opened, False),
            Segment(body + self.assistant_close, m.get("loss", True), reply=True),
        ]
        if self.after_close:
            segs.append(Segment(self.after_close, False))
        return segs

    def _content(self, content: str | list[dict], counts: dict) -> str:
        if isinstance(content, str):
            return content
        media, text = [], []
        for part in content:
            kind = media_kind(part)
            if kind is None:
                text.append(part["text"])
            else:
                counts[kind] += 1
                marker = (self.image if kind == "image" else self.video).format(index=counts[kind])
                (media if self.media_first else text).append(marker)
        return "".join(media + text)


def _merge(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s in segs:
        if not s.text:
            continue
        if out and out[-1].trainable == s.trainable and not (s.reply or out[-1].reply):
            out[-1] = Segment(out[-1].text + s.text, s.trainable)
        else:
            out.append(s)
    return out


def _tool_content(content) -> str:
    return content if isinstance(content, str) else _json(content)


def assistant_parts(i: int, m: dict) -> tuple[str | list, str, list[str]]:
    """(content, reasoning, calls as JSON text) of assistant message ``i``; the reasoning comes from
    ``reasoning_content`` or else a ``<think>...</think>`` opening the content (read as Qwen3's template
    reads it). ValueError names the field of a malformed tool call."""
    content = m.get("content") or ""
    reasoning = m.get("reasoning_content")
    if not isinstance(reasoning, str):
        reasoning = ""
        if isinstance(content, str) and "</think>" in content:
            head, _, _ = content.partition("</think>")
            reasoning = head.rstrip("\n").split("<think>")[-1].lstrip("\n")
            content = content.split("</think>")[-1].lstrip("\n")
    return content, reasoning.strip("\n"), _calls(i, m.get("tool_calls"))


def _calls(i: int, calls) -> list[str]:
    if not calls:
        return []
    if not isinstance(calls, list):
        raise ValueError(f"message {i}: tool_calls must be a list of calls")
    out = []
    for j, call in enumerate(calls):
        where = f"message {i}: tool_calls[{j}]"
        if not isinstance(call, dict):
            raise ValueError(f"{where} must be an object")
        fn = call.get("function", call)
        if "function" in call:
            where += ".function"
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError(f"{where} needs a 'name' string")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                parsed = json.loads(args)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}.arguments is not valid JSON ({e.msg})") from None
            if not isinstance(parsed, dict):
                raise ValueError(f"{where}.arguments must be a JSON object")
            text = args  # written as given, as the Jinja form (which cannot parse JSON) does
        elif isinstance(args, dict):
            text = _json(args)
        else:
            raise ValueError(f"{where}.arguments must be an object or its JSON text")
        out.append(f'{{"name": "{fn["name"]}", "arguments": {text}}}')
    return out


def media_kind(part: dict) -> str | None:
    """ "image" or "video" for a media part, None for a text part; ValueError for anything else."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text" and isinstance(part.get("text"), str):
        return None
    if kind in ("image", "image_url") and part.get(kind) is not None:
        return "image"
    if kind == "video" and part.get("video") is not None:
        return "video"
    raise ValueError(f"content part {part!r} is not a text, image, image_url or video part")


def check_messages(messages: list[dict], allow_open: bool = False, media: bool = False) -> None:
    """Raise ValueError unless messages are system?, then user turns each answered by an assistant,
    whose tool calls (if any) are answered by tool results and then the assistant again."""
    if not messages:
        raise ValueError("empty conversation")
    for i, m in enumerate(messages):
        calls = isinstance(m, dict) and m.get("role") == "assistant" and m.get("tool_calls")
        if not isinstance(m, dict) or "role" not in m or ("content" not in m and not calls):
            raise ValueError(f"message {i} needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        content = m.get("content")
        if m["role"] == "tool" or (m["role"] == "assistant" and content is None and calls):
            continue  # a tool result may be any JSON value; a call needs no text
        if isinstance(content, list) and content:
            try:
                kinds = {media_kind(part) for part in content}
            except ValueError as e:
                raise ValueError(f"message {i}: {e}") from None
            if kinds - {None} and not media:
                raise ValueError(f"message {i} has an image or video, but this chat template takes none")
        elif not isinstance(content, str):
            raise ValueError(f"message {i} content must be a string")
    offset = 1 if messages[0]["role"] == "system" else 0
    expected = ("user",)
    for i, m in enumerate(messages[offset:], offset):
        if m["role"] not in expected:
            if m["role"] == "tool":
                raise ValueError(f"message {i} is a tool result, but message {i - 1} made no tool call")
            raise ValueError(f"message {i} has role {m['role']!r} where {expected[-1]!r} belongs")
        if m["role"] == "user":
            expected = ("assistant",)
        elif m["role"] == "tool":
            expected = ("tool", "assistant")
        else:
            expected = ("tool",) if m.get("tool_calls") else ("user",)
    if not allow_open and messages[-1]["role"] != "assistant":
        raise ValueError("conversation does not end with an assistant reply")


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _jinja_format(fmt: str, **values: str) -> str:
    """A Jinja expression for ``fmt.format(**values)`` where each value is a Jinja expression."""
    pieces, rest = [], fmt
    while rest:
        at = min(((rest.find("{" + k + "}"), k) for k in values if "{" + k + "}" in rest), default=None)
        if at is None:
            pieces.append(_jinja_string(rest))
            break
        start, key = at
        if start:
            pieces.append(_jinja_string(rest[:start]))
        pieces.append(f"({values[key]})")
        rest = rest[start + len(key) + 2 :]
    return " ~ ".join(pieces) or "''"


def _content_jinja(t: ChatTemplate, var: str) -> str:
    """Jinja setting ``c`` to message ``var``'s content: a string, or its parts with media markers."""
    into = "ns.media" if t.media_first else "ns.text"

    def marker(kind: str, fmt: str) -> str:
        text = _jinja_format(fmt, index=f"ns.{kind}")
        return f"{{%- set ns.{kind} = ns.{kind} + 1 -%}}{{%- set {into} = {into} ~ {text} -%}}"

    media = ""
    if t.image:
        media += "{%- elif part['type'] in ('image', 'image_url') -%}" + marker("image", t.image)
    if t.video:
        media += "{%- elif part['type'] == 'video' -%}" + marker("video", t.video)
    return (
        f"{{%- set ns.text = '' -%}}{{%- set ns.media = '' -%}}"
        f"{{%- if {var}['content'] is string -%}}{{%- set ns.text = {var}['content'] -%}}"
        f"{{%- elif {var}['content'] -%}}{{%- for part in {var}['content'] -%}}"
        "{%- if part['type'] == 'text' -%}{%- set ns.text = ns.text ~ part['text'] -%}"
        + media
        + "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- set c = ns.media ~ ns.text -%}"
    )


def _listed_jinja(how: str) -> str:
    if how == "wrapped":
        return "(tool if tool['type'] == 'function' else {'type': 'function', 'function': tool})"
    if how == "function":
        return "(tool['function'] if tool['function'] is defined else tool)"
    return "tool"


def build_jinja(t: ChatTemplate, generation_by_default: bool = False) -> str:
    """The Jinja form of template ``t``: the same text as ``t.render`` for the same messages, ``tools``
    and ``keep_reasoning`` (a variable, default "last")."""
    s = t.tools or PLAIN_TOOLS
    q = _jinja_string
    user_head, user_tail = t.user.split("{content}")
    out = []
    if generation_by_default:  # ERNIE's own templates answer unless told not to
        out.append(
            "{%- if not add_generation_prompt is defined -%}"
            "{%- set add_generation_prompt = true -%}{%- endif -%}"
        )
    out.append(
        "{%- set keep_reasoning = keep_reasoning if keep_reasoning is defined else 'last' -%}"
        "{%- set ns = namespace(image=0, video=0, text='', media='', tools='', results='', last_query=-1) -%}"
        "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{%- set ns.last_query = loop.index0 -%}"
        "{%- endif -%}{%- endfor -%}"
        f"{{%- if tools -%}}{{%- set ns.tools = {q(s.tools_head)} -%}}{{%- for tool in tools -%}}"
        f"{{%- if not loop.first -%}}{{%- set ns.tools = ns.tools ~ {q(s.tools_sep)} -%}}{{%- endif -%}}"
        f"{{%- set ns.tools = ns.tools ~ ({_listed_jinja(s.listed)} | tojson) -%}}{{%- endfor -%}}"
        f"{{%- set ns.tools = ns.tools ~ {q(s.tools_tail)} -%}}{{%- endif -%}}"
    )
    if t.prefix:
        out.append(f"{{{{- {q(t.prefix)} -}}}}")

    def system_with(content: str) -> str:  # content: a Jinja expression
        if "{tools}" in t.system:
            return f"{{{{- {_jinja_format(t.system, content=content, tools='ns.tools')} -}}}}"
        joined = f"(({content}) ~ {q(s.system_join)} ~ ns.tools if ({content}) else ns.tools)"
        return (
            f"{{%- if ns.tools -%}}{{{{- {_jinja_format(t.system, content=joined)} -}}}}"
            f"{{%- else -%}}{{{{- {_jinja_format(t.system, content=content)} -}}}}{{%- endif -%}}"
        )

    # without a system message: the template's own system turn, the default prompt, or the tools alone
    if t.no_system is not None:
        absent = f"{{{{- {_jinja_format(t.no_system, tools='ns.tools')} -}}}}"
    elif t.default_system is not None:  # its literal first: tokenizers recognise the default prompt by it
        literal = q(t.system.format(content=t.default_system))
        absent = f"{{%- if not ns.tools -%}}{{{{- {literal} -}}}}{{%- else -%}}" + system_with(
            q(t.default_system)
        )
        absent += "{%- endif -%}"
    else:
        tools_only = _jinja_format(t.system, content="ns.tools", tools="ns.tools")
        absent = f"{{%- if ns.tools -%}}{{{{- {tools_only} -}}}}{{%- endif -%}}"
    out.append(
        f"{{%- if messages[0]['role'] != 'system' -%}}{absent}{{%- else -%}}"
        + _content_jinja(t, "messages[0]")
        + system_with("c")
        + "{%- endif -%}"
    )
    think_open, think_close = (q(x) for x in s.think)
    resp_head, resp_tail = (q(x) for x in s.response.split("{content}"))
    call_head, call_tail = (q(x) for x in s.call.split("{call}"))
    think_when = (
        "current or (keep_reasoning == 'all' and reasoning)"
        if s.think_in_prompt
        else "reasoning and (current or keep_reasoning == 'all')"
    )
    out.append(
        "{%- for m in messages -%}"
        "{%- if loop.first and m['role'] == 'system' -%}"
        "{%- elif m['role'] == 'user' -%}"
        + _content_jinja(t, "m")
        + f"{{{{- {q(user_head)} ~ c ~ {q(user_tail)} -}}}}"
        "{%- elif m['role'] == 'tool' -%}"
        f"{{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' -%}}{{{{- {q(user_head)} -}}}}"
        f"{{%- else -%}}{{{{- {q(s.result_sep)} -}}}}{{%- endif -%}}"
        "{%- set c = m['content'] if m['content'] is string else (m['content'] | tojson) -%}"
        f"{{{{- {_jinja_format(s.result, content='c')} -}}}}"
        f"{{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' -%}}{{{{- {q(user_tail)} -}}}}"
        "{%- endif -%}"
        "{%- else -%}"
        + _content_jinja(t, "m")
        + "{%- set reasoning = m['reasoning_content'] if m['reasoning_content'] is string else '' -%}"
        "{%- if m['reasoning_content'] is not string and '</think>' in c -%}"
        "{%- set reasoning = c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}"
        "{%- set c = c.split('</think>')[-1].lstrip('\\n') -%}{%- endif -%}"
        "{%- set reasoning = reasoning.strip('\\n') -%}"
        "{%- set current = loop.index0 > ns.last_query -%}"
        "{%- set calls = m['tool_calls'] if m['tool_calls'] else [] -%}"
        f"{{{{- {q(t.assistant_open)} -}}}}"
        f"{{%- if {think_when} -%}}{{{{- {think_open} ~ reasoning ~ {think_close} -}}}}"
        "{%- set c = c.lstrip('\\n') -%}{%- endif -%}"
        f"{{%- if c or not calls -%}}{{{{- {resp_head} ~ c ~ {resp_tail} -}}}}{{%- endif -%}}"
        "{%- for call in calls -%}"
        f"{{%- if loop.first -%}}{{{{- {q(s.call_lead[0])} if c else {q(s.call_lead[1])} -}}}}"
        f"{{%- else -%}}{{{{- {q(s.call_sep)} -}}}}{{%- endif -%}}"
        "{%- set f = call['function'] if call['function'] is defined else call -%}"
        "{%- set args = f['arguments'] if f['arguments'] is defined else {} -%}"
        f"{{{{- {call_head} ~ '{{\"name\": \"' ~ f['name'] ~ '\", \"arguments\": ' ~ "
        f"(args if args is string else args | tojson) ~ '}}' ~ {call_tail} -}}}}"
        "{%- endfor -%}"
        f"{{%- if calls -%}}{{{{- {q(s.calls_end)} -}}}}{{%- endif -%}}"
        f"{{{{- {q(t.assistant_close + t.after_close)} -}}}}"
        "{%- endif -%}{%- endfor -%}"
    )
    opening = t.assistant_open + (s.think[0] if s.think_in_prompt else "")
    out.append(f"{{%- if add_generation_prompt -%}}{{{{- {q(opening)} -}}}}{{%- endif -%}}")
    return "".join(out)


# The generic tool text of templates without their own (plain completion-style models).
PLAIN_TOOLS = ToolStyle(
    tools_head="You can call these functions (JSON schemas):\n<tools>\n",
    tools_tail=(
        '\n</tools>\nTo call one, reply with <tool_call>\n{"name": NAME, "arguments": {...}}\n</tool_call>'
    ),
    listed="function",
    result_sep="\n",
)

# Qwen3's ChatML tool format (its tokenizer_config.json chat_template): the tools listed one JSON per line
# inside <tools> in the system turn, calls as <tool_call> JSON, results as <tool_response> user turns.
QWEN_TOOLS = ToolStyle(
    tools_head=(
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    ),
    tools_tail=(
        "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
        'within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, '
        '"arguments": <args-json-object>}\n</tool_call>'
    ),
)

# ERNIE 4.5's User:/Assistant: layout as ERNIE's (VL) function-call data writes it (ERNIEKit's reader,
# PaddleFormers' ernie_vl template): the tools as one JSON list in <tool_list> after the system prompt,
# results inside <tool_output> user turns.
ERNIE_TOOLS = ToolStyle(
    tools_head="\n<tool_list>\n[",
    tools_tail="]\n</tool_list>\n",
    tools_sep=", ",
    listed="wrapped",
    system_join="",
    calls_end="\n",
    result="<tool_output>\n{content}\n</tool_output>\n",
    result_sep="",
)

# ERNIE-4.5-21B-A3B-Thinking (PaddleFormers' ernie template, which ERNIEKit's chatml data goes through;
# FastDeploy's ernie-x1 parser reads the same reply: "...</think>\n\n\n<tool_call>\n{..}\n</tool_call>\n").
ERNIE_THINKING_TOOLS = ToolStyle(
    tools_head="\n\n<tool_list>\n[",
    tools_tail="]\n</tool_list>",
    tools_sep=", ",
    listed="wrapped",
    call="<tool_call>\n{call}\n</tool_call>\n",
    call_lead=("\n", "\n"),
    think_in_prompt=True,
    response="<response>\n{content}\n</response>\n",
)


def ernie4_5() -> ChatTemplate:
    """ERNIE 4.5's template (as in its tokenizer_config.json), tools as ERNIE's function-call data."""
    t = ChatTemplate(
        "ernie4_5",
        "<|begin_of_sentence|>",
        "{content}\n",
        "User: {content}\n",
        "Assistant: ",
        "<|end_of_sentence|>",
        tools=ERNIE_TOOLS,
    )
    return dataclasses.replace(t, jinja=build_jinja(t, generation_by_default=True))


def ernie4_5_thinking() -> ChatTemplate:
    """ERNIE 4.5 Thinking (ERNIE-4.5-21B-A3B-Thinking): ``<|im_start|>`` turns, the system turn always
    there with the think-mode setting (and the tools after it), replies in ``<response>`` tags after the
    reasoning, and a generation prompt that opens the reasoning."""
    setting = "<global_setting>\nthink_mode=True\n</global_setting>{tools}<|im_end|>\n\n"
    t = ChatTemplate(
        "ernie4_5_thinking",
        "",
        "<|im_start|>system\n<system_setting>\n{content}\n</system_setting>\n\n" + setting,
        "<|im_start|>user\n{content}<|im_end|>\n\n",
        "<|im_start|>assistant\n",
        "<|im_end|>",
        after_close="\n\n",
        tools=ERNIE_THINKING_TOOLS,
        no_system="<|im_start|>system\n" + setting,
    )
    return dataclasses.replace(t, jinja=build_jinja(t))


def chatml(default_system: str | None = None) -> ChatTemplate:
    """ChatML (SmolLM2, Qwen): <|im_start|>role\\n...<|im_end|>\\n, optional default system prompt; tools,
    calls, results and reasoning as Qwen3 writes them."""
    t = ChatTemplate(
        "chatml",
        "",
        "<|im_start|>system\n{content}<|im_end|>\n",
        "<|im_start|>user\n{content}<|im_end|>\n",
        "<|im_start|>assistant\n",
        "<|im_end|>",
        after_close="\n",
        default_system=default_system,
        tools=QWEN_TOOLS,
    )
    return dataclasses.replace(t, jinja=build_jinja(t))


def plain(eos_token: str) -> ChatTemplate:
    """No chat markup: prompt lines, then the reply and EOS (base models, completion data)."""
    t = ChatTemplate("plain", "", "{content}\n", "{content}\n", "", eos_token, tools=PLAIN_TOOLS)
    return dataclasses.replace(t, jinja=build_jinja(t))


IMAGE_MARKER = "<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"
VIDEO_MARKER = "<|VIDEO_START|><|VIDEO_PLACEHOLDER|><|VIDEO_END|>"


def ernie4_5_vl() -> ChatTemplate:
    """ERNIE 4.5 VL: ERNIE's turns, each image as "Picture N:" and its markers where it stands."""
    image, video = "Picture {index}:" + IMAGE_MARKER, "Video {index}:" + VIDEO_MARKER
    t = dataclasses.replace(ernie4_5(), name="ernie4_5_vl", image=image, video=video)
    return dataclasses.replace(t, jinja=build_jinja(t, generation_by_default=True))


def paddleocr_vl() -> ChatTemplate:
    """PaddleOCR-VL: ERNIE's turns, a turn's images (their markers, unnumbered) before its text."""
    t = dataclasses.replace(ernie4_5(), name="paddleocr_vl", image=IMAGE_MARKER, media_first=True)
    return dataclasses.replace(t, jinja=build_jinja(t, generation_by_default=True))


TEMPLATES = ("ernie4_5", "ernie4_5_thinking", "ernie4_5_vl", "paddleocr_vl", "chatml", "plain")


def template_by_name(name: str, eos_token: str, default_system: str | None = None) -> ChatTemplate:
    if name == "ernie4_5":
        return ernie4_5()
    if name == "ernie4_5_thinking":
        return ernie4_5_thinking()
    if name == "ernie4_5_vl":
        return ernie4_5_vl()
    if name == "paddleocr_vl":
        return paddleocr_vl()
    if name == "chatml":
        return chatml(default_system)
    if name == "plain":
        return plain(eos_token)
    raise ValueError(f"unknown chat template {name!r}; known: {', '.join(TEMPLATES)}")
