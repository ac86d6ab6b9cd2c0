"""A run the web UI starts with --nproc 2 is the CLI's relaunch under paddle.distributed.launch (two gloo
processes); stopping it from the page is one Ctrl-C to the launcher: both ranks finish the step and save."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from erniekit.webui.app import WebUI, build_app


@pytest.mark.slow
def test_two_process_run_from_the_page_stops_and_saves(tmp_path):
    api = TestClient(build_app(WebUI(tmp_path)))
    overrides = [
        "train.max_steps=3000",
        "checkpoint.every=0",
        'train.output_dir="output/dp2"',
        "parallel.dp=2",
    ]
    wrong = api.post(
        "/api/train", json={"recipe": "ernie4_5/debug_sft", "overrides": overrides[:3], "nproc": 2}
    )
    assert wrong.status_code == 400 and wrong.json()["key"] == "nproc"  # dp 1 cannot fill 2 processes
    job = api.post(
        "/api/train", json={"recipe": "ernie4_5/debug_sft", "overrides": overrides, "nproc": 2}
    ).json()
    assert "--nproc 2" in job["command"]

    def detail():
        return api.get("/api/run", params={"dir": "output/dp2"}).json()

    deadline = time.monotonic() + 300
    while not (detail()["progress"] or {}).get("step", 0) >= 5:
        assert time.monotonic() < deadline and detail()["status"] in ("starting", "running"), detail()["log"]
        time.sleep(0.5)
    assert api.post("/api/run/stop", json={"dir": "output/dp2"}).status_code == 200
    while detail()["status"] in ("running", "stopping"):
        assert time.monotonic() < deadline, detail()["log"]
        time.sleep(0.5)
    d = detail()
    assert d["status"] == "stopped", d["log"]
    (saved,) = d["checkpoint_list"]
    assert (
        saved["step"] == d["progress"]["step"] and (tmp_path / saved["path"] / "trainer_state.json").is_file()
    )
    assert (
        tmp_path / job["command"].split("--log-dir ")[1] / "workerlog.1"
    ).is_file()  # rank 1 ran, logged apart
