"""The Ollama export's Modelfile: its TEMPLATE, executed by Go's text/template (what Ollama runs), renders
each chat exactly as our chat template does, and the file follows Ollama's documented Modelfile syntax.
Ollama itself cannot run here (no binary on the registries), so the Go template engine stands in."""

import json
import os
import re
import shutil
import subprocess

import pytest

from erniekit.export.ollama import go_template, modelfile
from erniekit.tokenizer.templates import chatml, ernie4_5, plain
from tests.helpers import erniekit

GO_RENDER = """
package main

import (
\t"encoding/json"
\t"os"
\t"text/template"
)

type Message struct {
\tRole    string `json:"role"`
\tContent string `json:"content"`
}

func main() {
\tvar in struct {
\t\tTemplate string    `json:"template"`
\t\tMessages []Message `json:"messages"`
\t}
\tif err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
\t\tpanic(err)
\t}
\tt := template.Must(template.New("chat").Parse(in.Template))
\tif err := t.Execute(os.Stdout, map[string]any{"Messages": in.Messages}); err != nil {
\t\tpanic(err)
\t}
}
"""

CHATS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Name a colour"},
        {"role": "assistant", "content": "Blue."},
        {"role": "user", "content": 'And "another" one\non two lines'},
    ],
]


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    go = shutil.which("go")
    assert go, "Go is needed to run Ollama's template engine (apt-get install golang-go; .ci/run does)"
    tmp = tmp_path_factory.mktemp("go")
    (tmp / "render.go").write_text(GO_RENDER)
    env = {**os.environ, "GOCACHE": str(tmp / "cache"), "GOPATH": str(tmp / "gopath"), "GO111MODULE": "off"}
    subprocess.run([go, "build", "-o", str(tmp / "render"), str(tmp / "render.go")], check=True, env=env)

    def render(template: str, messages: list[dict]) -> str:
        proc = subprocess.run(
            [str(tmp / "render")],
            input=json.dumps({"template": template, "messages": messages}),
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout

    return render


@pytest.mark.parametrize("template", [chatml("You are a helpful assistant."), ernie4_5(), plain("</s>")])
def test_go_template_renders_like_ours(go_render, template):
    for chat in CHATS:
        messages = chat
        if template.default_system and chat[0]["role"] != "system":  # Ollama adds SYSTEM when none is given
            messages = [{"role": "system", "content": template.default_system}, *chat]
        want = template.render_text(chat, add_generation_prompt=True)
        assert go_render(go_template(template), messages) == want, template.name


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """Ollama's documented grammar: INSTRUCTION arguments, one per line; values in triple quotes may
    span lines; # starts a comment."""
    out, rest = [], text
    instruction = re.compile(r"(FROM|PARAMETER|TEMPLATE|SYSTEM|ADAPTER|LICENSE|MESSAGE)[ \t]+", re.I)
    while rest.strip():
        rest = rest.lstrip("\n")
        if rest.startswith("#"):
            rest = rest.split("\n", 1)[1] if "\n" in rest else ""
            continue
        m = instruction.match(rest)
        assert m, f"not an instruction: {rest[:40]!r}"
        rest = rest[m.end() :]
        if rest.startswith('"""'):
            end = rest.index('"""', 3)
            value, rest = rest[3:end], rest[end + 3 :]
            assert rest[:1] in ("", "\n"), rest[:20]
        else:
            value, _, rest = rest.partition("\n")
        out.append((m.group(1).upper(), value))
    return out


def test_modelfile_follows_ollamas_syntax(go_render):
    class Tok:
        template, eos_token = chatml("You are a helpful assistant."), "<|endoftext|>"

    parsed = parse_modelfile(modelfile(Tok, "run-f16.gguf", 8192))
    assert parsed[0] == ("FROM", "./run-f16.gguf")
    params = [v for k, v in parsed if k == "PARAMETER"]
    assert params == ['stop "<|im_end|>"', 'stop "<|endoftext|>"', "num_ctx 8192"]
    (template,) = [v for k, v in parsed if k == "TEMPLATE"]
    assert go_render(template, [{"role": "user", "content": "x"}]).endswith("<|im_start|>assistant\n")
    assert ("SYSTEM", "You are a helpful assistant.") in parsed


def test_export_cli_writes_gguf_and_modelfile(tmp_path):
    run = tmp_path / "run"
    erniekit(
        "train", "ernie4_5/debug_sft", f"train.output_dir={run}", "train.max_steps=1", "train.eval_every=0"
    )
    erniekit("export", run, "--to", "ollama", "--out", tmp_path / "ollama")
    parsed = parse_modelfile((tmp_path / "ollama" / "Modelfile").read_text())
    gguf = parsed[0][1].removeprefix("./")
    assert (tmp_path / "ollama" / gguf).is_file() and gguf.endswith("-f16.gguf")
    assert 'stop "<|end_of_sentence|>"' in [v for k, v in parsed if k == "PARAMETER"]
    assert "ok" in erniekit("verify", tmp_path / "ollama").stdout
