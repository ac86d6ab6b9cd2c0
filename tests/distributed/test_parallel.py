"""Every parallel layout, as real processes on gloo, computes what one process computes.

Each scenario is one ``paddle.distributed.launch`` under a timeout, with its own log directory and
ports; its first 5 losses (and gradient norms) must equal the one-process run to 1e-5. The one-process
reference uses the same global batch split into the same micro-batches (the MoE load-balancing loss is
computed per micro-batch, so the split matters for MoE models).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from erniekit.config.core import ConfigError
from erniekit.trainer.loop import Trainer
from erniekit.trainer.metrics import read_metrics
from tests.helpers import debug_recipe, wait_for_step

MAIN = str(Path(__file__).resolve().parents[2] / "erniekit" / "__main__.py")
COMMON = [
    "train.max_steps=5",
    "data.max_seq_len=128",
    "data.eval_holdout=0",
    "train.eval_every=0",
    "checkpoint.final=false",
]
_ports = iter(range(41000 + 1000 * (os.getpid() % 7), 60000, 400))


def free_port() -> int:
    for port in _ports:  # the compatibility layer also uses port + 200 + group id for sub-group stores
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port")


def launch(tmp_path: Path, nproc: int, *overrides: str, recipe: str = "ernie4_5/debug_sft") -> list[dict]:
    out = tmp_path / "dist"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "paddle.distributed.launch",
        "--nproc_per_node",
        str(nproc),
        "--log_dir",
        str(out / "log"),
        "--master",
        f"127.0.0.1:{free_port()}",
        MAIN,
        "train",
        recipe,
        f"train.output_dir={out / 'run'}",
        f"data.cache_dir={tmp_path.parent / 'datasets-cache'}",
        "logging.progress=none",
        "logging.visualdl=false",
        *COMMON,
        *overrides,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, check=False)
    if proc.returncode:
        logs = "\n".join(p.read_text()[-2500:] for p in sorted((out / "log").glob("workerlog.*")))
        pytest.fail(f"launch failed ({proc.returncode}):\n{logs}")
    run_dir = [o.split("=", 1)[1] for o in cmd if o.startswith("train.output_dir=")][-1]
    return [r for r in read_metrics(Path(run_dir) / "metrics.jsonl") if "loss" in r]


def single(tmp_path: Path, *overrides: str, recipe: str = "ernie4_5/debug_sft") -> list[dict]:
    trainer = Trainer(debug_recipe(tmp_path / "single", *COMMON, *overrides, recipe=recipe))
    trainer.fit()
    return [r for r in read_metrics(trainer.output_dir / "metrics.jsonl") if "loss" in r]


def assert_same(dist_records: list[dict], single_records: list[dict], tol: float = 1e-5) -> None:
    assert len(dist_records) == len(single_records) == 5
    for a, b in zip(dist_records, single_records):
        assert abs(a["loss"] - b["loss"]) <= tol, (a["step"], a["loss"], b["loss"])
        assert abs(a["grad_norm"] - b["grad_norm"]) <= tol * max(1.0, b["grad_norm"]), (a["step"], a, b)
        if "aux_loss" in b:  # MoE: the load-balancing loss is reported (and trained) in every layout
            assert abs(a["aux_loss"] - b["aux_loss"]) <= tol, (a["step"], a["aux_loss"], b["aux_loss"])
    worst = max(abs(a["loss"] - b["loss"]) for a, b in zip(dist_records, single_records))
    print(f"max |loss - one process| over 5 steps: {worst:.2e}")  # shown with pytest -s (the issue notes)


MOE = ["model.flavor=ernie4_5/debug-moe"]
DEEP = ["model.flavor=ernie4_5/debug-deep"]

SCENARIOS = {
    # name: (processes, distributed overrides, single-process overrides)
    "dp2": (
        2,
        ["parallel.dp=2", "train.micro_batch_size=2", "train.grad_accum=2"],
        ["train.micro_batch_size=4", "train.grad_accum=2"],
    ),
    "sharding2-stage1": (
        2,
        ["parallel.sharding.degree=2", "train.micro_batch_size=2", "train.grad_accum=2"],
        ["train.micro_batch_size=4", "train.grad_accum=2"],
    ),
    "tp2": (
        2,
        ["parallel.tp=2", "train.micro_batch_size=4", "train.grad_accum=2"],
        ["train.micro_batch_size=4", "train.grad_accum=2"],
    ),
    "tp2-sp": (
        2,
        [
            "parallel.tp=2",
            "parallel.sequence_parallel=true",
            "train.micro_batch_size=4",
            "train.grad_accum=2",
        ],
        ["train.micro_batch_size=4", "train.grad_accum=2"],
    ),
    "tp2-lora": (
        2,
        [
            "parallel.tp=2",
            "lora.enabled=true",
            "optim.lr=1e-2",
            "train.micro_batch_size=4",
            "train.grad_accum=2",
        ],
        ["lora.enabled=true", "optim.lr=1e-2", "train.micro_batch_size=4", "train.grad_accum=2"],
    ),
    "pp2-1f1b-4mb": (
        2,
        ["parallel.pp=2", "train.micro_batch_size=2", "train.grad_accum=4"],
        ["train.micro_batch_size=2", "train.grad_accum=4"],
    ),
    "ep2-moe-dp": (
        2,
        [*MOE, "parallel.dp=2", "parallel.ep=2", "train.micro_batch_size=2", "train.grad_accum=2"],
        [*MOE, "train.micro_batch_size=2", "train.grad_accum=4"],
    ),
    "tp2-ep2-moe-tp": (
        2,
        [
            *MOE,
            "parallel.tp=2",
            "parallel.ep=2",
            "parallel.ep_group=tp",
            "train.micro_batch_size=4",
            "train.grad_accum=2",
        ],
        [*MOE, "train.micro_batch_size=4", "train.grad_accum=2"],
    ),
    "tp2xpp2": (
        4,
        ["parallel.tp=2", "parallel.pp=2", "train.micro_batch_size=4", "train.grad_accum=2"],
        ["train.micro_batch_size=4", "train.grad_accum=2"],
    ),
    "dp2xtp2": (
        4,
        ["parallel.dp=2", "parallel.tp=2", "train.micro_batch_size=2", "train.grad_accum=2"],
        ["train.micro_batch_size=4", "train.grad_accum=2"],
    ),
    "pp2-lora": (
        2,
        [
            "parallel.pp=2",
            "lora.enabled=true",
            "optim.lr=1e-2",
            "train.micro_batch_size=2",
            "train.grad_accum=4",
        ],
        ["lora.enabled=true", "optim.lr=1e-2", "train.micro_batch_size=2", "train.grad_accum=4"],
    ),
    # MoE load-balancing loss joins the backward pass on the stage that computes it
    "pp2-moe": (
        2,
        [
            *MOE,
            "parallel.pp=2",
            "parallel.pp_segment=uniform",
            "train.micro_batch_size=2",
            "train.grad_accum=4",
        ],
        [*MOE, "train.micro_batch_size=2", "train.grad_accum=4"],
    ),
    # four stages x two chunks each: fleet's interleaved 1F1B (8 micro-batches >= 2 x pp)
    "pp4-interleaved": (
        4,
        [*DEEP, "parallel.pp=4", "parallel.virtual_pp=2", "train.micro_batch_size=1", "train.grad_accum=8"],
        [*DEEP, "train.micro_batch_size=1", "train.grad_accum=8"],
    ),
    # all-to-all among four ranks (two experts each)
    "ep4-moe-dp4": (
        4,
        [*MOE, "parallel.dp=4", "parallel.ep=4", "train.micro_batch_size=1", "train.grad_accum=2"],
        [*MOE, "train.micro_batch_size=1", "train.grad_accum=8"],
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_layout_matches_one_process(name, tmp_path):
    nproc, dist_overrides, single_overrides = SCENARIOS[name]
    assert_same(launch(tmp_path, nproc, *dist_overrides), single(tmp_path, *single_overrides))


# The VL debug recipe: images in packed rows, a 2-block vision tower, the resampler, and a decoder whose
# second layer routes image tokens to their own experts. Aux-loss-free (its load-balancing loss is a
# per-micro-batch statistic): the correction biases move after every step, on every layout alike.
VL = "ernie4_5_vl/debug_sft"
VL_COMMON = ["model.router_aux_loss_coef=0", "model.moe_bias_update_rate=0.001"]
OCR = ["model.flavor=paddleocr_vl/debug", "data.image_min_pixels=3136", "data.image_max_pixels=12544"]
VL_SCENARIOS = {
    # one process runs the same micro-batches (the load-balancing statistic is reported per micro-batch):
    # each of 2 ranks takes 2 of the step's 4 micro-batches of 2 rows (the recipe accumulates 2)
    "vl-dp2": (
        2,
        ["parallel.dp=2", "train.micro_batch_size=2"],
        ["train.micro_batch_size=2", "train.grad_accum=4"],
    ),
    "vl-sharding2": (
        2,
        ["parallel.sharding.degree=2", "train.micro_batch_size=2"],
        ["train.micro_batch_size=2", "train.grad_accum=4"],
    ),
    # vision heads, MLPs and resampler stages split too; both expert sets replicated
    "vl-tp2": (2, ["parallel.tp=2", "train.micro_batch_size=4"], ["train.micro_batch_size=4"]),
    # text and vision experts each split over the tensor group
    "vl-tp2-ep2-tp": (
        2,
        ["parallel.tp=2", "parallel.ep=2", "parallel.ep_group=tp", "train.micro_batch_size=4"],
        ["train.micro_batch_size=4"],
    ),
    # both sets exchanged over data ranks (a rank without image tokens still joins the vision exchange)
    "vl-ep2-dp": (
        2,
        ["parallel.dp=2", "parallel.ep=2", "train.micro_batch_size=2"],
        ["train.micro_batch_size=2", "train.grad_accum=4"],
    ),
    # the vision encoder on the first stage, images handed to it per micro-batch
    "vl-pp2": (
        2,
        ["parallel.pp=2", "train.micro_batch_size=2", "train.grad_accum=4"],
        ["train.micro_batch_size=2", "train.grad_accum=4"],
    ),
    # PaddleOCR-VL's dense decoder: the sequence is split after the images are spliced in
    "ocr-tp2-sp": (
        2,
        [*OCR, "parallel.tp=2", "parallel.sequence_parallel=true", "train.micro_batch_size=4"],
        [*OCR, "train.micro_batch_size=4"],
    ),
}


@pytest.mark.parametrize("name", list(VL_SCENARIOS))
def test_vl_layout_matches_one_process(name, tmp_path):
    nproc, dist_overrides, single_overrides = VL_SCENARIOS[name]
    got = launch(tmp_path, nproc, *VL_COMMON, *dist_overrides, recipe=VL)
    assert_same(got, single(tmp_path, *VL_COMMON, *single_overrides, recipe=VL))


def test_vl_checkpoints_are_layout_independent(tmp_path):
    """A VL run saved with the vision tower, resampler and both expert sets split over tp resumes in one
    process; one process's checkpoint resumes as 2 pipeline stages (the vision tower on the first)."""
    # 4 micro-batches of 2 rows throughout (the reported aux loss is a per-micro-batch statistic)
    args = [
        *VL_COMMON,
        "train.micro_batch_size=2",
        "train.grad_accum=4",
        "checkpoint.every=2",
        "checkpoint.keep=0",
    ]
    reference = single(tmp_path / "ref", *args, recipe=VL)
    tp_ep = ["parallel.tp=2", "parallel.ep=2", "parallel.ep_group=tp"]
    wide = launch(tmp_path / "wide", 2, *tp_ep, *args, "train.max_steps=2", recipe=VL)
    run_dir = tmp_path / "wide" / "dist" / "run"
    narrowed = Trainer(
        debug_recipe(
            tmp_path / "narrow", *COMMON, *args, f"train.output_dir={run_dir}", "train.resume=auto", recipe=VL
        )
    )
    assert narrowed.state.step == 2
    narrowed.fit()
    assert_same(wide + [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r][2:], reference)
    ref_dir = tmp_path / "ref" / "single" / "out"
    for later in ("checkpoint-4", "checkpoint-5"):
        if (ref_dir / later).exists():
            (ref_dir / later).rename(tmp_path / f"unused-{later}")
    resume = [f"train.output_dir={ref_dir}", "train.resume=auto"]
    widened = launch(tmp_path / "widen", 2, *args, "parallel.pp=2", *resume, recipe=VL)
    assert [r["step"] for r in widened] == [1, 2, 3, 4, 5]
    assert_same(widened, reference)


def test_dpo_under_tensor_parallelism(tmp_path):
    args = ["train.micro_batch_size=2", "train.grad_accum=1", "train.eval_on_start=false"]
    assert_same(
        launch(tmp_path, 2, "parallel.tp=2", *args, recipe="ernie4_5/debug_dpo"),
        single(tmp_path, *args, recipe="ernie4_5/debug_dpo"),
    )


def test_reward_model_under_data_parallelism(tmp_path):
    """The score head is a parameter like the others: its gradients are averaged over the replicas."""
    args = ["train.grad_accum=1", "train.eval_on_start=false"]
    assert_same(
        launch(tmp_path, 2, "parallel.dp=2", "train.micro_batch_size=1", *args, recipe="ernie4_5/debug_rm"),
        single(tmp_path, "train.micro_batch_size=2", *args, recipe="ernie4_5/debug_rm"),
    )


def test_kto_under_data_parallelism(tmp_path):
    """KTO's reference point z0 is the mean over the whole step's mismatched pairs, on every rank."""
    args = ["train.grad_accum=1", "train.eval_on_start=false", "data.packing=false"]
    assert_same(
        launch(tmp_path, 2, "parallel.dp=2", "train.micro_batch_size=2", *args, recipe="ernie4_5/debug_kto"),
        single(tmp_path, "train.micro_batch_size=4", *args, recipe="ernie4_5/debug_kto"),
    )


def test_checkpoints_are_layout_independent(tmp_path):
    """tp2 x pp2 writes a checkpoint that one process resumes, and the reverse, continuing the same losses."""
    args = ["train.micro_batch_size=4", "train.grad_accum=2", "checkpoint.every=2", "checkpoint.keep=0"]
    reference = single(tmp_path / "ref", *args)
    wide = launch(tmp_path / "wide", 4, "parallel.tp=2", "parallel.pp=2", *args, "train.max_steps=2")
    run_dir = tmp_path / "wide" / "dist" / "run"
    narrowed = Trainer(
        debug_recipe(tmp_path / "narrow", *COMMON, *args, f"train.output_dir={run_dir}", "train.resume=auto")
    )
    assert narrowed.state.step == 2
    narrowed.fit()
    merged = wide + [r for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r][2:]
    assert_same(merged, reference)
    # and back: one process wrote checkpoint-2 of the reference run; tp2 x pp2 resumes from it
    ref_dir = tmp_path / "ref" / "single" / "out"
    (ref_dir / "checkpoint-4").rename(tmp_path / "unused-4")
    widened = launch(
        tmp_path / "widen",
        4,
        "parallel.tp=2",
        "parallel.pp=2",
        *args,
        f"train.output_dir={ref_dir}",
        "train.resume=auto",
    )
    assert [r["step"] for r in widened] == [1, 2, 3, 4, 5]  # metrics.jsonl keeps steps 1-2 of the writer
    assert_same(widened, reference)


def test_degree_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDLE_TRAINERS_NUM", "2")
    with pytest.raises(
        ConfigError,
        match=r"parallel: dp x sharding.degree x tp x pp = 1 x 1 x 2 x 2 = 4, "
        r"but 2 process\(es\) were launched",
    ):
        Trainer(debug_recipe(tmp_path, "parallel.tp=2", "parallel.pp=2"))
    with pytest.raises(ConfigError, match="parallel.sharding.stage: sharding stage 2 needs GPUs"):
        Trainer(debug_recipe(tmp_path, "parallel.sharding.degree=2", "parallel.sharding.stage=2"))


def train_command(*args: str) -> list[str]:
    """``erniekit train`` on the debug SFT recipe, as a user types it."""
    return [sys.executable, "-m", "erniekit", "train", "ernie4_5/debug_sft", *args]


def nproc2(tmp_path, *overrides: str) -> tuple[list[str], dict]:
    """``erniekit train --nproc 2``: two data-parallel ranks, a thread each; and its environment."""
    cmd = train_command(
        *("--nproc", "2", "--log-dir", str(tmp_path / "log"), f"train.output_dir={tmp_path / 'run'}"),
        *("parallel.dp=2", f"data.cache_dir={tmp_path.parent / 'datasets-cache'}"),
        *("logging.progress=none", "logging.visualdl=false", *overrides),
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PADDLE_TRAINERS_NUM", None)
    return cmd, env


def test_sharding_stage3_on_cpu_stops_at_startup_in_one_line(tmp_path):
    env = {**os.environ, "PADDLE_TRAINERS_NUM": "2"}
    proc = subprocess.run(
        train_command(
            f"train.output_dir={tmp_path / 'out'}", "parallel.sharding.degree=2", "parallel.sharding.stage=3"
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: parallel.sharding.stage: sharding stage 3 needs GPUs: "
        "Paddle's stage 2/3 sharding refuses CPU devices; use stage 1 on CPU"
    )


def test_config_rules():
    from erniekit.config import load_recipe

    for overrides, message in (
        (
            ["parallel.sequence_parallel=true"],
            "parallel.sequence_parallel: sequence parallelism shards along",
        ),
        (
            ["parallel.ep=2", "parallel.ep_group=tp"],
            "parallel.ep: experts on the tensor-parallel group need ep",
        ),
        (["parallel.pp=2", "train.grad_accum=1"], "train.grad_accum: the pipeline needs at least pp=2"),
        (["parallel.pp=2", "parallel.virtual_pp=2"], "parallel.virtual_pp: fleet's interleaved pipeline"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_recipe("ernie4_5/debug_sft", overrides)


def test_train_nproc_relaunches_through_paddle_launch(tmp_path):
    """``erniekit train --nproc 2`` is the same run as ``paddle.distributed.launch`` with 2 processes."""
    out = tmp_path / "run"
    cmd, env = nproc2(tmp_path, "train.micro_batch_size=2", "train.grad_accum=2", *COMMON)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "paddle.distributed.launch --nproc_per_node 2" in proc.stderr
    assert sorted(p.name for p in (tmp_path / "log").glob("workerlog.*")) == ["workerlog.0", "workerlog.1"]
    dist_records = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    assert_same(dist_records, single(tmp_path, "train.micro_batch_size=4", "train.grad_accum=2"))


def test_ctrl_c_under_launch_saves_one_step_on_every_rank(tmp_path):
    """Ctrl-C on ``erniekit train --nproc 2`` in a terminal: both ranks finish the same step; it is saved."""
    out, logs = tmp_path / "run", tmp_path / "log"
    cmd, env = nproc2(tmp_path, "train.max_steps=100000", "checkpoint.every=0")
    # its own process group, as a terminal gives a job; the signal goes to the whole group
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_step(proc, out, 3)
    os.killpg(proc.pid, signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    step = max(r["step"] for r in read_metrics(out / "metrics.jsonl"))
    assert [p.name for p in out.glob("checkpoint-*")] == [f"checkpoint-{step}"]
    assert json.loads((out / f"checkpoint-{step}" / "trainer_state.json").read_text())["step"] == step
    for rank in (0, 1):
        assert f"interrupted at step {step}\n" in (logs / f"workerlog.{rank}").read_text()


def test_train_nproc_must_match_the_degrees(tmp_path):
    proc = subprocess.run(
        train_command("--nproc", "2", f"train.output_dir={tmp_path}", "parallel.tp=4"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: parallel: dp x sharding.degree x tp x pp = 4, but --nproc 2 x --nnodes 1 = 2 processes "
        "were asked for"
    )
