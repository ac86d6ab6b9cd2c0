"""Chat templates: messages -> text segments marked trainable or not.

Each template renders the same text as its Jinja form (shipped in ``tokenizer_config.json`` so other
tools format prompts identically; a test checks the two agree). Rendering as segments lets the data
pipeline put the loss on exactly the assistant replies and their end-of-turn token.

A message is ``{"role": "system"|"user"|"assistant", "content": str}``; an assistant message may carry
``"loss": false`` to exclude that turn from the loss. For vision-language templates the content may
also be a list of parts, ``{"type": "text", "text": ...}``, ``{"type": "image", "image": PATH}`` (or
OpenAI's ``{"type": "image_url", "image_url": {"url": ...}}``) and ``{"type": "video", "video": [frames]}``:
each image renders as the template's marker (its placeholder once; the caller repeats it per image token).
"""

from __future__ import annotations

import dataclasses
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
    image: str = ""  # how an image part renders ({index} counts images from 1); "" takes no images
    video: str = ""
    media_first: bool = False  # a turn's images come before its text, whatever the parts' order

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> list[Segment]:
        check_messages(messages, allow_open=add_generation_prompt, media=bool(self.image))
        segs = [Segment(self.prefix, False)] if self.prefix else []
        if self.default_system is not None and messages[0]["role"] != "system":
            segs.append(Segment(self.system.format(content=self.default_system), False))
        counts = {"image": 0, "video": 0}
        for m in messages:
            content = self._content(m["content"], counts)
            if m["role"] == "system":
                segs.append(Segment(self.system.format(content=content), False))
            elif m["role"] == "user":
                segs.append(Segment(self.user.format(content=content), False))
            else:
                train = m.get("loss", True)
                segs += [
                    Segment(self.assistant_open, False),
                    Segment(content + self.assistant_close, train),
                ]
                if self.after_close:
                    segs.append(Segment(self.after_close, False))
        if add_generation_prompt:
            segs.append(Segment(self.assistant_open, False))
        return _merge(segs)

    def render_text(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return "".join(s.text for s in self.render(messages, add_generation_prompt))

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
        if out and out[-1].trainable == s.trainable:
            out[-1] = Segment(out[-1].text + s.text, s.trainable)
        else:
            out.append(s)
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
    """Raise ValueError unless messages are system?, then alternating user/assistant turns."""
    if not messages:
        raise ValueError("empty conversation")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} needs 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        content = m["content"]
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


def _ernie_vl_jinja(image: str, video: str, media_first: bool) -> str:
    """ERNIE's layout with content that may be a list of text / image / video parts."""
    into = "ns.media" if media_first else "ns.text"  # where a part's marker goes

    def marker(kind: str, fmt: str) -> str:
        head, _, tail = fmt.partition("{index}")
        text = (
            f"{_jinja_string(head)} ~ ns.{kind} ~ {_jinja_string(tail)}"
            if "{index}" in fmt
            else _jinja_string(fmt)
        )
        return f"{{%- set ns.{kind} = ns.{kind} + 1 -%}}{{%- set {into} = {into} ~ {text} -%}}"

    return (
        "{%- if not add_generation_prompt is defined -%}{%- set add_generation_prompt = true -%}{%- endif -%}"
        "{%- set ns = namespace(image=0, video=0, text='', media='') -%}"
        "{{- '<|begin_of_sentence|>' -}}"
        "{%- for message in messages -%}"
        "{%- set ns.text = '' -%}{%- set ns.media = '' -%}"
        "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}"
        "{%- else -%}{%- for part in message['content'] -%}"
        "{%- if part['type'] == 'text' -%}{%- set ns.text = ns.text ~ part['text'] -%}"
        "{%- elif part['type'] in ('image', 'image_url') -%}"
        + marker("image", image)
        + "{%- elif part['type'] == 'video' -%}"
        + marker("video", video)
        + "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- set content = ns.media ~ ns.text -%}"
        "{%- if message['role'] == 'user' -%}{{- 'User: ' + content + '\\n' -}}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{- 'Assistant: ' + content + '<|end_of_sentence|>' -}}"
        "{%- elif message['role'] == 'system' -%}{{- content + '\\n' -}}"
        "{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'Assistant: ' -}}{%- endif -%}"
    )


IMAGE_MARKER = "<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"
VIDEO_MARKER = "<|VIDEO_START|><|VIDEO_PLACEHOLDER|><|VIDEO_END|>"


def ernie4_5_vl() -> ChatTemplate:
    """ERNIE 4.5 VL: ERNIE's turns, each image as "Picture N:" and its markers where it stands."""
    image, video = "Picture {index}:" + IMAGE_MARKER, "Video {index}:" + VIDEO_MARKER
    return dataclasses.replace(
        ernie4_5(), name="ernie4_5_vl", image=image, video=video, jinja=_ernie_vl_jinja(image, video, False)
    )


def paddleocr_vl() -> ChatTemplate:
    """PaddleOCR-VL: ERNIE's turns, a turn's images (their markers, unnumbered) before its text."""
    return dataclasses.replace(
        ernie4_5(),
        name="paddleocr_vl",
        image=IMAGE_MARKER,
        media_first=True,
        jinja=_ernie_vl_jinja(IMAGE_MARKER, "", True),
    )


TEMPLATES = ("ernie4_5", "ernie4_5_vl", "paddleocr_vl", "chatml", "plain")


def template_by_name(name: str, eos_token: str, default_system: str | None = None) -> ChatTemplate:
    if name == "ernie4_5":
        return ernie4_5()
    if name == "ernie4_5_vl":
        return ernie4_5_vl()
    if name == "paddleocr_vl":
        return paddleocr_vl()
    if name == "chatml":
        return chatml(default_system)
    if name == "plain":
        return plain(eos_token)
    raise ValueError(f"unknown chat template {name!r}; known: {', '.join(TEMPLATES)}")
