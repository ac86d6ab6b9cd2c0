"""``erniekit serve`` as a real process on 127.0.0.1, driven by the official ``openai`` client: answers
equal ``erniekit chat``'s greedy ones, streaming or not, alone or among many concurrent requests; the
401/400/429 paths answer with OpenAI's error JSON and the server lives on; a dropped stream frees its
row; SIGTERM finishes what is in flight."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from erniekit.models import build_model, save_pretrained
from erniekit.tokenizer import load_tokenizer
from tests.helpers import erniekit

openai = pytest.importorskip("openai")
KEY = "sk-test"
PROMPTS = ["What is 2 + 3?", "Name a colour.", "hi", "Write a long story about a cat and a dog.", "Why?"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("served")
    model = build_model("ernie4_5/debug", seed=0)
    for name, p in model.named_parameters():  # far from uniform, so different prompts get different answers
        if "norm" not in name:
            p.set_value(p * 15)
    save_pretrained(model, out)
    tokenizer = load_tokenizer("samples://ernie_tokenizer")
    tokenizer.save(out)
    return out


class Served:
    def __init__(self, model_dir: Path, *args: str):
        self.port = free_port()
        self.log = model_dir.parent / f"serve-{self.port}.log"
        cmd = [sys.executable, "-m", "erniekit", "serve", str(model_dir), "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError(f"the server did not start: {self.log.read_text()[-3000:]}")

    def client(self, key: str = KEY):
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=120)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)


@pytest.fixture(scope="module")
def server(model_dir):
    s = Served(model_dir, "--api-key", KEY, "--max-batch", "4", "--name", "tiny")
    yield s
    assert s.stop() == 0


def chat_cli(model_dir: Path, prompt: str, tokens: int) -> str:
    reply = erniekit("chat", model_dir, "--prompt", prompt, "--max-new-tokens", tokens).stdout
    return reply.removesuffix("\n")


def ask(client, prompt: str, tokens: int = 16, **kw):
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=tokens, **kw
    )


def test_answers_equal_erniekit_chat_streaming_or_not(server, model_dir):
    client = server.client()
    assert [m.id for m in client.models.list().data] == ["tiny"]
    tokenizer = load_tokenizer(model_dir)
    answers = set()
    for prompt in PROMPTS[:3]:
        want = chat_cli(model_dir, prompt, 16)
        got = ask(client, prompt)
        assert got.choices[0].message.content == want and got.choices[0].message.role == "assistant"
        prompt_ids = tokenizer.encode_chat([{"role": "user", "content": prompt}], True)[0]
        assert got.usage.prompt_tokens == len(prompt_ids)
        assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens
        assert got.choices[0].finish_reason in ("stop", "length")
        stream = ask(client, prompt, stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == want and chunks[-1].usage.completion_tokens == got.usage.completion_tokens
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == got.choices[0].finish_reason
        answers.add(want)
    assert len(answers) == 3  # the prompts matter


def test_completions_stop_strings_and_seeded_samples(server):
    client = server.client()
    plain = client.completions.create(model="tiny", prompt="Once upon a time", max_tokens=12, temperature=0)
    text = plain.choices[0].text
    assert plain.object == "text_completion" and plain.usage.completion_tokens == 12 and len(text) > 3
    stop = text[2:4]
    cut = client.completions.create(
        model="tiny", prompt="Once upon a time", max_tokens=12, temperature=0, stop=stop
    )
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"

    def sample():
        out = ask(client, "Tell me something.", 12, n=3, seed=5, temperature=1.0)
        return [c.message.content for c in out.choices]

    first = sample()
    assert first == sample() and len(first) == 3 and len(set(first)) > 1


def test_32_concurrent_requests_equal_their_sequential_answers(server):
    client = server.client()
    jobs = [(PROMPTS[i % len(PROMPTS)], 4 + (i * 7) % 29) for i in range(32)]
    want = {job: ask(client, *job).choices[0].message.content for job in set(jobs)}
    got: dict[int, str] = {}
    lock = threading.Lock()

    def worker(k: int) -> None:
        for i in range(k, len(jobs), 8):
            answer = ask(client, *jobs[i]).choices[0].message.content
            with lock:
                assert i not in got
                got[i] = answer

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert sorted(got) == list(range(32))
    assert all(got[i] == want[job] for i, job in enumerate(jobs))


def test_bad_requests_get_openai_errors_and_the_server_lives(server):
    with pytest.raises(openai.AuthenticationError):
        ask(server.client("wrong"), "hi")
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": []})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    client = server.client()
    cases = [
        (dict(model="nope"), "model"),
        (dict(temperature=9), "temperature"),
        (dict(max_tokens=0), "max_tokens"),
        (dict(max_tokens=10**6), "max_tokens"),
        (dict(n=100), "n"),
    ]
    for extra, param in cases:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
        with pytest.raises(openai.BadRequestError) as e:
            client.chat.completions.create(**body)
        assert e.value.body["param"] == param, e.value.body
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, "word " * 5000)
    assert e.value.body["code"] == "context_length_exceeded"
    headers = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{server.url}/v1/chat/completions", content=b"{not json", headers=headers)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": "hi"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    image = [{"type": "image_url", "image_url": {"url": "/etc/passwd"}}, {"type": "text", "text": "hi"}]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": image}])
    assert ask(client, "hi", 4).choices[0].message.content is not None  # still serving


def test_a_full_queue_429_a_dropped_stream_frees_its_row_and_sigterm_drains(model_dir):
    s = Served(model_dir, "--max-batch", "1", "--max-queue", "1", "--max-model-len", "1024", "--name", "tiny")
    try:
        client = s.client()
        # a stream dropped after its first pieces: the one row is free again for the next request
        with ask(client, "Write a long story.", 900, stream=True) as stream:
            for n, _ in enumerate(stream):
                if n == 3:
                    break
        deadline = time.time() + 30
        while httpx.get(f"{s.url}/health").json()["finished"].get("cancelled") != 1:
            assert time.time() < deadline, httpx.get(f"{s.url}/health").json()
            time.sleep(0.1)
        assert httpx.get(f"{s.url}/health").json()["running"] == 0
        assert ask(client, "hi", 4).choices[0].message.content is not None

        # one running (1,000 tokens: seconds), one waiting: of six sent at once, the rest are refused at once
        results: dict[str, object] = {}
        start = threading.Barrier(6)

        def long(name: str, tokens: int = 1000) -> None:
            start.wait() if name != "d" else None
            try:
                results[name] = ask(client, "Write a long story.", tokens).usage.completion_tokens
            except openai.APIStatusError as e:
                results[name] = e.status_code

        threads = [threading.Thread(target=long, args=(str(n),)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        served = [v for v in results.values() if v != 429]
        assert len(served) <= 2 and served and all(v > 100 for v in served), results  # the others: 429

        # SIGTERM while a request runs: it completes, then the process exits cleanly
        inflight = threading.Thread(target=long, args=("d", 300))
        inflight.start()
        time.sleep(1.5)
        s.proc.send_signal(signal.SIGTERM)
        inflight.join(600)
        assert results["d"] == 300 and s.proc.wait(120) == 0
    finally:
        s.stop()
    assert "Traceback" not in s.log.read_text(), s.log.read_text()[-3000:]


def test_sigterm_is_quiet_when_idle(model_dir):
    s = Served(model_dir)
    assert httpx.get(f"{s.url}/v1/models").json()["data"][0]["id"] == model_dir.name
    assert s.stop() == 0
    assert os.path.getsize(s.log) < 10_000 and "Traceback" not in s.log.read_text()


def test_logprobs_match_the_models_distribution(server, model_dir):
    import numpy as np
    import paddle

    from erniekit.inference.load import load_for_inference

    client = server.client()
    got = ask(client, "What is 2 + 3?", 6, logprobs=True, top_logprobs=3)
    entries = got.choices[0].logprobs.content
    assert len(entries) == got.usage.completion_tokens and all(len(e.top_logprobs) == 3 for e in entries)
    # greedy: each chosen token is the most likely one
    assert all(e.top_logprobs[0].logprob == e.logprob for e in entries)
    tokenizer, model, _ = load_for_inference(model_dir)
    ids = tokenizer.encode_chat([{"role": "user", "content": "What is 2 + 3?"}], True)[0]
    logits = model(paddle.to_tensor([ids])).logits.numpy()[0, -1].astype(np.float64)
    first = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    assert abs(entries[0].logprob - first.max()) < 1e-4
    streamed = [c for c in ask(client, "What is 2 + 3?", 6, logprobs=True, stream=True) if c.choices]
    lps = [e.logprob for c in streamed if c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert np.allclose(lps, [e.logprob for e in entries], atol=1e-6)
    legacy = client.completions.create(
        model="tiny", prompt="Once upon", max_tokens=4, temperature=0, logprobs=2
    )
    lp = legacy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == 4 and all(len(t) <= 2 for t in lp.top_logprobs)
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0


WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory) -> Path:
    """A tiny model taught, through the real CLI, to answer the weather question with a tool call: the
    training record is in OpenAI's format (tools, tool_calls), which the chat template renders as the
    server renders a request with tools."""
    out = tmp_path_factory.mktemp("tools")
    question = [{"role": "user", "content": "What is the weather in Paris?"}]
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    record = {
        "messages": [*question, {"role": "assistant", "content": "", "tool_calls": [call]}],
        "tools": WEATHER,
    }
    (out / "tool.jsonl").write_text((json.dumps(record) + "\n") * 8)
    overrides = [
        f"data.train=[{out / 'tool.jsonl'}]",
        f"train.output_dir={out / 'run'}",
        f"data.cache_dir={out / 'cache'}",
        "train.max_steps=150",
        "optim.lr=5e-3",
        "data.max_seq_len=320",
        "data.eval_holdout=0",
        "train.micro_batch_size=1",
        "train.grad_accum=1",
        "train.eval_every=0",
        "checkpoint.every=0",
        "logging.progress=none",
    ]
    erniekit("train", "ernie4_5/debug_sft", *overrides)
    return out / "run"


def test_a_tool_call_round_trips_into_tool_calls(tool_run):
    s = Served(tool_run, "--name", "tiny")
    try:
        client = s.client()
        question = [{"role": "user", "content": "What is the weather in Paris?"}]
        got = client.chat.completions.create(model="tiny", messages=question, tools=WEATHER, temperature=0)
        choice = got.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {
            "city": "Paris"
        }
        stream = client.chat.completions.create(
            model="tiny", messages=question, tools=WEATHER, temperature=0, stream=True
        )
        chunks = [c for c in stream if c.choices]
        calls = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
        assert [t.function.name for t in calls] == ["get_weather"] and chunks[-1].choices[
            0
        ].finish_reason == "tool_calls"
        assert not "".join(c.choices[0].delta.content or "" for c in chunks)
        # without tools the same text is plain content
        plain = client.chat.completions.create(
            model="tiny", messages=question, tools=WEATHER, tool_choice="none"
        )
        assert plain.choices[0].message.tool_calls is None
        # the call and its result go back in: the next turn renders and is answered
        history = [
            *question,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 30}'},
        ]
        again = client.chat.completions.create(model="tiny", messages=history, tools=WEATHER, max_tokens=8)
        assert again.choices[0].finish_reason in ("stop", "length", "tool_calls")
    finally:
        assert s.stop() == 0


def lora_run(model_dir: Path, out: Path, *overrides: str) -> Path:
    recipe = [f"model.path={model_dir}", "model.flavor=null", "lora.enabled=true", "optim.lr=2e-2"]
    run = ["train.max_steps=15", "train.eval_every=0", f"train.output_dir={out}", "logging.progress=none"]
    erniekit("train", "ernie4_5/debug_sft", *recipe, *run, *overrides)
    return out


def test_adapters_unmerged_in_one_batch_answer_as_their_runs(model_dir, tmp_path):
    from erniekit.trainer.restore import restore

    runs = {
        "alpaca-r8": lora_run(model_dir, tmp_path / "a"),
        "attn-r4": lora_run(model_dir, tmp_path / "b", "lora.rank=4", "lora.targets=[qkv_proj,o_proj]"),
    }
    adapters = [f"--adapter={name}={path}" for name, path in runs.items()]
    s = Served(model_dir, "--name", "tiny", "--max-batch", "4", *adapters)
    try:
        client = s.client()
        assert [m.id for m in client.models.list().data] == ["tiny", *runs]
        tokenizer = load_tokenizer(model_dir)
        want = {}
        for name in ["tiny", *runs]:
            model = restore(runs[name])[2] if name in runs else None
            for prompt in PROMPTS[:3]:
                if model is None:
                    want[name, prompt] = chat_cli(model_dir, prompt, 12)
                    continue
                ids = tokenizer.encode_chat([{"role": "user", "content": prompt}], True)[0]
                out = model.generate([ids], max_new_tokens=12, eos_token_ids=tokenizer.stop_ids)[0]
                want[name, prompt] = tokenizer.decode(out).rstrip("\ufffd")  # as streamed: whole characters
        assert len({want[n, PROMPTS[0]] for n in ["tiny", *runs]}) == 3  # each adapter changes the answer
        jobs = list(want) * 2
        got: dict[int, str] = {}

        def worker(k: int) -> None:
            for i in range(k, len(jobs), 4):
                name, prompt = jobs[i]
                reply = client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": prompt}], max_tokens=12, temperature=0
                )
                got[i] = reply.choices[0].message.content

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(600)
        assert [got[i] for i in range(len(jobs))] == [want[j] for j in jobs]
    finally:
        assert s.stop() == 0


def test_a_vl_model_reads_image_parts_as_erniekit_chat_does(tmp_path):
    import base64

    import numpy as np
    from PIL import Image

    from erniekit.models import family

    model = build_model("ernie4_5_vl/debug", seed=0)
    for name, p in model.named_parameters():  # far from uniform, so the image changes the answer
        if "norm" not in name:
            p.set_value(p * 15)
    vl = tmp_path / "vl"
    save_pretrained(model, vl)
    tokenizer = load_tokenizer("samples://ernie_vl_tokenizer")
    tokenizer.set_template(family("ernie4_5_vl").hf.CHAT_TEMPLATE)
    tokenizer.save(vl)
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.RandomState(0)
    for name, size in (("a.png", (60, 80, 3)), ("b.png", (90, 50, 3))):
        Image.fromarray((rng.rand(*size) * 255).astype("uint8")).save(pictures / name)
    ask_cli = ["chat", vl, "--prompt", "Describe it.", "--max-new-tokens", 12]
    want = {n: erniekit(*ask_cli, "--image", pictures / n).stdout for n in ("a.png", "b.png")}
    assert want["a.png"] != want["b.png"]
    s = Served(vl, "--name", "tiny", "--allow-images", str(pictures))
    try:
        client = s.client()

        def describe(url: str) -> str:
            parts = [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": "Describe it."},
            ]
            reply = client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": parts}], max_tokens=12, temperature=0
            )
            return reply.choices[0].message.content + "\n"

        encoded = base64.b64encode((pictures / "a.png").read_bytes()).decode()
        assert describe(f"data:image/png;base64,{encoded}") == want["a.png"]
        assert describe(str(pictures / "b.png")) == want["b.png"]
        for bad in (str(vl / "config.json"), "data:image/png;base64,AAAA", str(pictures / "missing.png")):
            with pytest.raises(openai.BadRequestError):
                describe(bad)
        assert describe(str(pictures / "a.png")) == want["a.png"]  # still serving
    finally:
        assert s.stop() == 0
