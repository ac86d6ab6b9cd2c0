"""The web UI's server side: recipe forms and the CLI's refusals, where paths may point, the token, and
jobs that are ordinary CLI runs (stopped the Ctrl-C way, resumed, found again by a restarted server,
then chatted with, exported and evaluated). The page itself is driven in tests/browser."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from erniekit.cli import main
from erniekit.webui import forms
from erniekit.webui.app import WebUI, build_app
from erniekit.webui.jobs import Jobs
from tests.helpers import erniekit

RECIPE = "ernie4_5/debug_sft"


def client(root, **kw) -> TestClient:
    return TestClient(build_app(WebUI(root, **kw)))


def wait(condition, timeout=180.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_form_has_every_field_with_its_doc():
    checked = forms.check(RECIPE, [])
    assert checked["ok"] and checked["output_dir"] == "output/debug_sft"
    fields = {f["key"]: f for f in checked["fields"]}
    assert fields["optim.lr"]["kind"] == "float" and fields["optim.lr"]["value"] == 3e-3
    assert fields["train.max_steps"]["value"] == 60
    assert fields["checkpoint.final"]["kind"] == "bool"
    assert fields["model.fused_ops"]["choices"] == ["auto", "on", "off"]
    # a tagged section offers its variants: switching method.name switches the fields shown
    assert {"sft", "dpo", "grpo", "ppo", "kto"} <= set(fields["method.name"]["choices"])
    assert fields["data.train"]["kind"] == "yaml" and "sft_erniekit.jsonl" in fields["data.train"]["value"]
    undocumented = [k for k, f in fields.items() if not f["doc"]]
    assert not undocumented, undocumented
    dpo = {f["key"] for f in forms.check(RECIPE, ['method.name="dpo"'])["fields"]}
    assert {"method.beta", "method.loss"} <= dpo


def test_shown_values_load_back_as_the_same_recipe():
    """What the form shows, sent back as overrides (as the page does when a field is edited), changes
    nothing: lists of data sections included."""
    fields = [f for f in forms.check(RECIPE, [])["fields"] if f["kind"] != "section"]
    raw = {"text": json.dumps, "choice": json.dumps, "bool": lambda v: "true" if v else "false"}
    overrides = [
        f"{f['key']}={'null' if f['value'] is None else raw.get(f['kind'], str)(f['value'])}" for f in fields
    ]
    again = forms.check(RECIPE, overrides)
    assert again["ok"], again
    assert again["fields"] == forms.check(RECIPE, [])["fields"]


@pytest.mark.parametrize(
    "override",
    ["optim.lr=-1", "train.max_steps=many", 'method.name="sfx"', "optim.lrr=1", "train.precision=fp64"],
)
def test_refusals_read_as_the_cli_prints_them(override, capsys):
    assert main(["train", RECIPE, override]) == 2
    printed = capsys.readouterr().err.strip().splitlines()[-1]
    checked = forms.check(RECIPE, [override])
    assert not checked["ok"] and checked["error"] == printed
    assert checked["key"] and checked["key"].split(".")[0] == override.split(".")[0]


def test_the_page_loads_nothing_from_elsewhere(tmp_path):
    """No CDN: every file the page asks for is one of the package's own static files."""
    import re
    from pathlib import Path

    static = Path(forms.__file__).parent / "static"
    index = (static / "index.html").read_text()
    wanted = re.findall(r'(?:src|href)="([^"]+)"', index)
    assert wanted and all(
        w.startswith("/static/") and (static / w.removeprefix("/static/")).is_file() for w in wanted
    )
    for f in static.iterdir():
        urls = set(re.findall(r"https?://[^\s\"')]+", f.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (f.name, urls)
    served = client(tmp_path)
    for w in wanted:
        assert served.get(w).status_code == 200


def test_paths_outside_the_start_directory_are_refused(tmp_path):
    (tmp_path / "root").mkdir()
    api = client(tmp_path / "root")
    r = api.get("/api/run", params={"dir": "../elsewhere"})
    assert r.status_code == 403 and "outside" in r.json()["error"] and "--any-path" in r.json()["error"]
    r = api.post("/api/recipe", json={"recipe": "/etc/passwd", "overrides": []})
    assert r.status_code == 403
    r = api.post("/api/chat/load", json={"model": "/"})
    assert r.status_code == 403
    r = api.post("/api/export", json={"run": "x", "out": "../../tmp/out"})
    assert r.status_code == 403
    # a shipped recipe is named, not a path: always allowed
    assert api.post("/api/recipe", json={"recipe": RECIPE, "overrides": []}).json()["ok"]
    r = api.post("/api/recipe", json={"recipe": RECIPE, "overrides": "optim.lr=1"})
    assert r.status_code == 400 and r.json()["key"] == "overrides"
    assert api.post("/api/upload", params={"name": "x.exe"}, content=b"MZ").status_code == 400


def test_a_token_guards_every_request(tmp_path):
    api = client(tmp_path, token="s3cret")
    assert api.get("/api/info").status_code == 401
    assert api.get("/").status_code == 401
    assert api.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert api.get("/", params={"token": "wrong"}).status_code == 401
    assert api.get("/", params={"token": "s3cret"}).status_code == 200  # the printed address sets a cookie
    assert api.get("/api/info").status_code == 200
    assert client(tmp_path).get("/api/info").status_code == 200  # no token asked for: open (127.0.0.1)


def test_jobs_keep_their_exit_and_are_found_again(tmp_path):
    jobs = Jobs(tmp_path / "state")
    ok = jobs.start("train", ["config", "show", RECIPE], tmp_path)
    bad = jobs.start("train", ["train", RECIPE, "optim.lr=-1"], tmp_path, run_dir="output/x")
    wait(lambda: not ok.running() and not bad.running(), 120, "the jobs to end")
    again = Jobs(tmp_path / "state")  # a restarted server reads the same directories back
    found = {j.id: j for j in again.all()}
    assert found[ok.id].status()["state"] == "finished" and "max_steps" in found[ok.id].log_tail()
    status = found[bad.id].status()
    assert status["state"] == "failed" and status["code"] == 2
    assert status["error"] == "error: command line: optim.lr: must be > 0, got -1.0"
    assert again.for_run("output/x").id == bad.id


@pytest.mark.slow
def test_train_stop_reattach_resume_then_chat_export_eval(tmp_path):
    api = client(tmp_path)
    overrides = ["train.max_steps=4000", "checkpoint.every=0", 'train.output_dir="output/w"']
    bad = api.post("/api/train", json={"recipe": RECIPE, "overrides": ["optim.lr=-1"]})
    assert bad.status_code == 400 and bad.json()["key"] == "optim.lr"
    job = api.post("/api/train", json={"recipe": RECIPE, "overrides": overrides}).json()
    assert job["command"] == f"erniekit train {RECIPE} " + " ".join(overrides)
    again = api.post("/api/train", json={"recipe": RECIPE, "overrides": overrides})
    assert again.status_code == 409  # one writer per run directory

    def step(c):
        p = c.get("/api/run", params={"dir": "output/w"}).json()["progress"]
        return p["step"] if p else 0

    wait(lambda: step(api) >= 5, what="training steps")
    detail = api.get("/api/run", params={"dir": "output/w"}).json()
    assert detail["status"] == "running" and detail["progress"]["total_steps"] == 4000
    assert len(detail["metrics"]["records"]) >= 5 and "loss" in detail["metrics"]["records"][-1]
    later = api.get("/api/run", params={"dir": "output/w", "since": detail["metrics"]["next"]}).json()
    assert not later["metrics"]["reset"] and all(
        r["step"] > detail["metrics"]["records"][-1]["step"] for r in later["metrics"]["records"]
    )

    # the web server restarts: the new one finds the run still going, and stops it the Ctrl-C way
    api = client(tmp_path)
    runs = api.get("/api/runs").json()["runs"]
    assert [(r["dir"], r["status"]) for r in runs] == [("output/w", "running")]
    assert api.post("/api/run/stop", json={"dir": "output/w"}).status_code == 200
    wait(
        lambda: api.get("/api/run", params={"dir": "output/w"}).json()["status"] == "stopped", what="the stop"
    )
    first = api.get("/api/run", params={"dir": "output/w"}).json()["checkpoint_list"]
    assert len(first) == 1 and (tmp_path / first[0]["path"] / "trainer_state.json").is_file()
    stopped_at = first[0]["step"]

    # resume: the same command with train.resume=auto, going on from the checkpoint
    resumed = api.post("/api/run/resume", json={"dir": "output/w"}).json()
    assert resumed["command"].endswith("train.resume=auto")
    wait(lambda: step(api) >= stopped_at + 5, what="steps after the resume")
    api.post("/api/run/stop", json={"dir": "output/w"})
    wait(
        lambda: api.get("/api/run", params={"dir": "output/w"}).json()["status"] == "stopped", what="the stop"
    )
    steps = [c["step"] for c in api.get("/api/run", params={"dir": "output/w"}).json()["checkpoint_list"]]
    assert steps[0] == stopped_at and steps[-1] > stopped_at
    logged = [
        json.loads(line)["step"] for line in (tmp_path / "output/w/metrics.jsonl").read_text().splitlines()
    ]
    assert logged == list(range(1, steps[-1] + 1))  # one run, read as one: every step once, in order

    # chat through serve's own API, streamed
    newest = f"output/w/checkpoint-{steps[-1]}"
    listed = [m["path"] for m in api.get("/api/models").json()["models"]]
    assert listed[:2] == ["output/w", newest]
    assert api.post("/chat/v1/chat/completions", json={"messages": []}).status_code == 409  # nothing loaded
    loaded = api.post("/api/chat/load", json={"model": newest}).json()
    assert loaded["loaded"] and loaded["model"] == newest and not loaded["vision"]
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8, "stream": True}
    with api.stream("POST", "/chat/v1/chat/completions", json=body) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]" and len(events) >= 3
    bad = api.post("/chat/v1/chat/completions", json={"messages": "hi"})
    assert bad.status_code == 400  # serve's own refusal; the slot keeps serving
    assert api.post("/chat/v1/chat/completions", json={**body, "stream": False}).status_code == 200

    # export and eval: the CLI's verbs as jobs, with what they wrote and scored
    ex = api.post("/api/export", json={"run": newest, "out": "output/w/export-hf", "to": "hf"}).json()
    ev = api.post(
        "/api/eval", json={"target": newest, "data": ["samples://sft_messages.jsonl"], "overrides": []}
    ).json()
    assert "--data samples://sft_messages.jsonl" in ev["command"]
    for job_id in (ex["id"], ev["id"]):
        wait(
            lambda j=job_id: api.get("/api/job", params={"id": j}).json()["state"] == "finished", what=job_id
        )
    files = {f["path"] for f in api.get("/api/job", params={"id": ex["id"]}).json()["files"]}
    assert {"config.json", "model.safetensors", "manifest.json"} <= files
    results = api.get("/api/job", params={"id": ev["id"]}).json()["results"]
    assert results["loss"]["loss"] > 0 and results["loss"]["ppl"] > 1 and results["loss"]["tokens"] > 0
    assert "output/w/export-hf" in [m["path"] for m in api.get("/api/models").json()["models"]]


@pytest.mark.slow
def test_a_vision_model_chats_about_an_uploaded_image(tmp_path):
    from erniekit.resources import SAMPLES_DIR

    erniekit("train", "ernie4_5_vl/debug_sft", "train.max_steps=1", f"train.output_dir={tmp_path / 'vl'}")
    api = client(tmp_path)
    loaded = api.post("/api/chat/load", json={"model": "vl/checkpoint-1"}).json()
    assert loaded["vision"] and loaded["model"] == "vl/checkpoint-1"
    image = (SAMPLES_DIR / "vl_images" / "shape_000.png").read_bytes()
    path = api.post("/api/upload", params={"name": "shape.png"}, content=image).json()["path"]
    bad = api.post("/api/upload", params={"name": "shape.png"}, content=b"not a png")
    assert bad.status_code == 400 and "not a readable image" in bad.json()["error"]
    parts = [{"type": "image_url", "image_url": {"url": path}}, {"type": "text", "text": "Which shape?"}]
    body = {"messages": [{"role": "user", "content": parts}], "max_tokens": 4}
    with_image = api.post("/chat/v1/chat/completions", json=body).json()
    text_only = api.post(
        "/chat/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "Which shape?"}]}
    ).json()
    assert (
        with_image["usage"]["prompt_tokens"] > text_only["usage"]["prompt_tokens"] + 4
    )  # the image's tokens
    elsewhere = [{"type": "image_url", "image_url": {"url": "/etc/hostname"}}, parts[1]]
    r = api.post(
        "/chat/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": elsewhere}]}
    )
    assert r.status_code == 400  # only uploads and files under the start directory are read
