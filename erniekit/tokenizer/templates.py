"""Chat templates: messages -> text segments marked trainable or not.

Each template renders the same text as its Jinja form (shipped in ``tokenizer_config.json`` so other
tools format prompts identically; a test checks the two agree). Rendering as segments lets the data
pipeline put the loss on exactly the assistant replies and their end-of-turn token.

A message is ``{"role": "system"|"user"|"assistant", "content": str}``; an assistant message may carry
``"loss": false`` to exclude that turn from the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Segment:
    text: str
    trainable: bool


@dataclass(frozen=True)
class ChatTemplate:
    name: str
    prefix: str  # once, before everything (e.g. the BOS marker)
    system: str  # format with {content}
    user: str
    assistant_open: str  # before an assistant reply (part of the prompt)
    assistant_close: str  # after the reply: the end-of-turn marker, trained so the model learns to stop
    after_close: str = ""  # text after the end-of-turn marker (not trained)
    default_system: str | None = None
    jinja: str = ""

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> list[Segment]:
        check_messages(messages, allow_open=add_generation_prompt)
        segs = [Segment(self.prefix, False)] if self.prefix else []
        if self.default_system is not None and messages[0]["role"] != "system":
            segs.append(Segment(self.system.format(content=self.default_system), False))
        for m in messages:
            if m["role"] == "system":
                segs.append(Segment(self.system.format(content=m["content"]), False))
            elif m["role"] == "user":
                segs.append(Segment(self.user.format(content=m["content"]), False))
            else:
                train = m.get("loss", True)
                segs += [
                    Segment(self.assistant_open, False),
                    Segment(m["content"] + self.assistant_close, train),
                ]
                if self.after_close:
                    segs.append(Segment(self.after_close, False))
        if add_generation_prompt:
            segs.append(Segment(self.assistant_open, False))
        return _merge(segs)

    def render_text(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return "".join(s.text for s in self.render(messages, add_generation_prompt))


def _merge(segs: list[Segment]) -> list[Segment]:
    out: list[Segment] = []
    for s in segs:
        if not s.text:
            continue
        if out and out[-1].trainable == s.trainable:
            out[-1] = Segment(out[-1].text + s.text, s.trainable)
        else:
            out.append(s)
    return out


def check_messages(messages: list[dict], allow_open: bool = False) -> None:
    """Raise ValueError unless messages are system?, then alternating user/assistant turns."""
    if not messages:
        raise ValueError("empty conversation")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i} content must be a string")
    offset = 1 if messages[0]["role"] == "system" else 0
    turns = messages[offset:]
    for i, m in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise ValueError(f"message {i + offset} has role {m['role']!r} where {expected!r} belongs")
    if not allow_open and (not turns or turns[-1]["role"] != "assistant"):
        raise ValueError("conversation does not end with an assistant reply")


ERNIE_JINJA = (
    "{%- if not add_generation_prompt is defined -%}{%- set add_generation_prompt = true -%}{%- endif -%}"
    "{{- '<|begin_of_sentence|>' -}}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}{{- 'User: ' + message['content'] + '\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- 'Assistant: ' + message['content'] + '<|end_of_sentence|>' -}}"
    "{%- elif message['role'] == 'system' -%}{{- message['content'] + '\n' -}}"
    "{%- endif -%}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant: ' -}}{%- endif -%}"
)

CHATML_JINJA = (
    "{%- for message in messages -%}"
    "{%- if loop.first and messages[0]['role'] != 'system' -%}DEFAULT_SYSTEM{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)

PLAIN_JINJA = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}{{- message['content'] + eos_token -}}"
    "{%- else -%}{{- message['content'] + '\n' -}}{%- endif -%}"
    "{%- endfor -%}"
)


def _jinja_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def ernie4_5() -> ChatTemplate:
    """ERNIE 4.5's template (as in its tokenizer_config.json)."""
    return ChatTemplate(
        "ernie4_5",
        "<|begin_of_sentence|>",
        "{content}\n",
        "User: {content}\n",
        "Assistant: ",
        "<|end_of_sentence|>",
        jinja=ERNIE_JINJA,
    )


def chatml(default_system: str | None = None) -> ChatTemplate:
    """ChatML (SmolLM2, Qwen): <|im_start|>role\\n...<|im_end|>\\n, optional default system prompt."""
    literal = default_system and ("<|im_start|>system\n" + default_system + "<|im_end|>\n")
    jinja = CHATML_JINJA.replace(
        "DEFAULT_SYSTEM", "{{- " + _jinja_string(literal) + " -}}" if literal else ""
    )
    return ChatTemplate(
        "chatml",
        "",
        "<|im_start|>system\n{content}<|im_end|>\n",
        "<|im_start|>user\n{content}<|im_end|>\n",
        "<|im_start|>assistant\n",
        "<|im_end|>",
        after_close="\n",
        default_system=default_system,
        jinja=jinja,
    )


def plain(eos_token: str) -> ChatTemplate:
    """No chat markup: prompt lines, then the reply and EOS (base models, completion data)."""
    return ChatTemplate(
        "plain",
        "",
        "{content}\n",
        "{content}\n",
        "",
        eos_token,
        jinja=PLAIN_JINJA.replace("eos_token", repr(eos_token)),
    )


def template_by_name(name: str, eos_token: str, default_system: str | None = None) -> ChatTemplate:
    if name == "ernie4_5":
        return ernie4_5()
    if name == "chatml":
        return chatml(default_system)
    if name == "plain":
        return plain(eos_token)
    raise ValueError(f"unknown chat template {name!r}; known: ernie4_5, chatml, plain")
