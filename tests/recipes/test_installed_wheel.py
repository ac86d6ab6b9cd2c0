"""erniekit installed from a wheel, used from an empty directory: recipes, samples and tokenizer travel along.

The wheel is built the way a release is (sdist first, then the wheel from the unpacked sdist) from a
copy of the source tree, and installed into a fresh virtualenv that borrows this environment's
dependencies through a ``.pth`` line, so nothing is downloaded. Every command then runs in an empty
temporary directory, far from the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.helpers import running_webui

ROOT = Path(__file__).resolve().parents[2]
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "output", ".cache", "build", "dist", "log", "*.egg-info", "__pycache__", ".*_cache"
)


def run(cmd, cwd, env, timeout=600):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr and "ccache" not in proc.stderr, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(bin directory of a fresh venv with the built wheel installed, environment to run it with)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src, dist, venv = tmp / "src", tmp / "dist", tmp / "venv"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src], tmp, env)
    (sdist,) = dist.glob("*.tar.gz")
    (wheel,) = dist.glob("*.whl")
    with tarfile.open(sdist) as tar:
        in_sdist = {Path(*Path(n).parts[1:]).as_posix() for n in tar.getnames()}
    assert {
        "recipes/ernie4_5/debug_sft.yaml",
        "configs/hardware/gpu_bf16.yaml",
        "erniekit/data/samples/ernie_tokenizer/tokenizer.model",
        "erniekit/ops/csrc/cpu_kernels.cc",
    } <= in_sdist
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"erniekit/{p.relative_to(ROOT).as_posix()}"
        for kind in ("recipes", "configs")
        for p in (ROOT / kind).rglob("*.yaml")
    }
    samples = {
        f"erniekit/{p.relative_to(ROOT / 'erniekit').as_posix()}"
        for p in (ROOT / "erniekit/data/samples").rglob("*.*")
    }
    assert shipped and shipped <= in_wheel and samples <= in_wheel, sorted((shipped | samples) - in_wheel)
    assert "erniekit/ops/csrc/cpu_kernels.cc" in in_wheel  # the CPU kernels compile from the installed copy
    page = {f"erniekit/webui/static/{p.name}" for p in (ROOT / "erniekit/webui/static").iterdir()}
    assert page <= in_wheel and {p.removeprefix("erniekit/") for p in page} <= {
        n.removeprefix("erniekit/") for n in in_sdist
    }

    run([sys.executable, "-m", "venv", "--without-pip", venv], tmp, env)
    site = Path(
        subprocess.check_output(
            [venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            text=True,
        ).strip()
    )
    # the dependencies (Paddle, datasets, ...) come from this environment; erniekit only from the wheel
    # (.pth lines add directories to sys.path without running the .pth files inside them, so this
    # environment's editable erniekit stays out of reach)
    (site / "borrowed_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet"]
    run([*pip, "--no-deps", "--no-index", wheel], tmp, env)
    env["HF_DATASETS_CACHE"] = str(tmp / "hf-datasets")
    return venv / "bin", env


@pytest.mark.slow
def test_wheel_install_trains_exports_and_chats_from_an_empty_directory(installed, tmp_path):
    bin_dir, env = installed
    erniekit = str(bin_dir / "erniekit")
    where = run([bin_dir / "python", "-c", "import erniekit; print(erniekit.__file__)"], tmp_path, env)
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent), where.stdout  # not the checkout

    listed = run([erniekit, "recipes"], tmp_path, env).stdout
    assert (
        "| ernie4_5/debug_sft | sft | ernie4_5/debug |" in listed and "ernie4_5_21b_a3b/grpo_lora" in listed
    )
    shown = run([erniekit, "config", "show", "ernie4_5/debug_sft", "--no-docs"], tmp_path, env).stdout
    assert "tokenizer: samples://ernie_tokenizer" in shown

    # a shipped recipe copied out to edit, and a user's recipe that extends a shipped one by name
    run([erniekit, "recipes", "--copy", "ernie4_5_300b_a47b/sft_lora_tp8_pp6", "mine/"], tmp_path, env)
    run([erniekit, "config", "show", "mine/sft_lora_tp8_pp6.yaml"], tmp_path, env)
    (tmp_path / "my_sft.yaml").write_text("base: ernie4_5/debug_sft\ntrain: {max_steps: 3}\n")
    assert "max_steps: 3" in run([erniekit, "config", "show", "my_sft.yaml"], tmp_path, env).stdout
    # and the shipped presets, listed and included by name
    assert "| configs/layouts/8gpu_tp4_ep4_sharding2 | parallel |" in listed
    (tmp_path / "my_tp.yaml").write_text(
        "base: [ernie4_5/debug_sft, configs/layouts/8gpu_tp4_ep4_sharding2]\n"
    )
    assert "  tp: 4\n" in run([erniekit, "config", "show", "my_tp.yaml", "--no-docs"], tmp_path, env).stdout

    run(
        [erniekit, "train", "ernie4_5/debug_sft", "train.max_steps=3", "logging.progress=none"], tmp_path, env
    )
    assert (tmp_path / "output/debug_sft/checkpoint-3").is_dir()
    run([erniekit, "export", "output/debug_sft", "--out", "export"], tmp_path, env)
    assert {"config.json", "model.safetensors", "tokenizer.model"} <= {
        p.name for p in (tmp_path / "export").iterdir()
    }
    ask = ["chat", "export", "--prompt", "What is 2 + 3?", "--max-new-tokens", "8"]
    reply = run([erniekit, *ask], tmp_path, env).stdout
    from_checkout = run([sys.executable, "-m", "erniekit", *ask], tmp_path, {**env, "PYTHONPATH": str(ROOT)})
    assert reply == from_checkout.stdout and reply.endswith("\n")

    # the web UI serves its page from the installed package (nothing from a CDN, nothing from the checkout)
    with running_webui(tmp_path, command=[erniekit], env=env) as url:
        page = urllib.request.urlopen(url + "static/app.js", timeout=5).read().decode()
    assert page == (ROOT / "erniekit/webui/static/app.js").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".erniekit",  # the web UI's jobs and uploads
        "export",
        "mine",
        "my_sft.yaml",
        "my_tp.yaml",
        "output",
    ]
