"""An Ollama ``Modelfile`` beside a GGUF export: ``ollama create NAME -f out/Modelfile`` then runs it.

    erniekit export output/run --to ollama --out out/     # out/<run>-f16.gguf + out/Modelfile

Ollama formats chats with a Go ``text/template`` (not Jinja), so ``TEMPLATE`` is written from the
tokenizer's chat template: its prefix, then each message of ``.Messages`` by role, then the assistant's
opening (the generation prompt). The template's end-of-turn marker and the EOS token become ``stop``
parameters; a default system prompt becomes ``SYSTEM`` (Ollama adds it when a chat has none, as the
template does). Syntax per Ollama's Modelfile reference: one instruction per line, multi-line values in
triple quotes.
"""

from __future__ import annotations

from erniekit.errors import CheckpointError
from erniekit.tokenizer.templates import ChatTemplate

CONTENT = "{{ .Content }}"


def go_template(t: ChatTemplate) -> str:
    """The chat template as Go text/template over Ollama's ``.Messages`` (each with .Role, .Content)."""
    if t.image:
        raise CheckpointError(f"the {t.name} template takes images; Ollama export covers text models")
    roles = (
        f'{{{{ if eq .Role "system" }}}}{t.system.format(content=CONTENT, tools="")}'
        f'{{{{ else if eq .Role "user" }}}}{t.user.format(content=CONTENT)}'
        f'{{{{ else if eq .Role "assistant" }}}}{t.assistant_open}{CONTENT}{t.assistant_close}{t.after_close}'
        "{{ end }}"
    )
    opening = t.assistant_open + (t.tools.think[0] if t.opens_thinking else "")
    return f"{t.prefix}{{{{ range .Messages }}}}{roles}{{{{ end }}}}{opening}"


def modelfile(tokenizer, gguf_name: str, context: int) -> str:
    t = tokenizer.template
    text = go_template(t)
    for value in (text, t.default_system or ""):
        if '"""' in value:
            raise CheckpointError('the chat template contains """, which a Modelfile cannot quote')
    stops = []
    for stop in (t.assistant_close.strip(), tokenizer.eos_token):
        if stop and stop not in stops:
            stops.append(stop)
    lines = [f"FROM ./{gguf_name}", f'TEMPLATE """{text}"""']
    if t.default_system:
        lines.append(f'SYSTEM """{t.default_system}"""')
    lines += [f"PARAMETER stop {_quoted(s)}" for s in stops]
    lines.append(f"PARAMETER num_ctx {context}")
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
