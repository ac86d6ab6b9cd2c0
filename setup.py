"""Packaging for erniekit.

Paddle ships as two distributions: ``paddlepaddle`` (CPU, on PyPI) and ``paddlepaddle-gpu`` (CUDA, on
Paddle's own index). Both provide the ``paddle`` module, so we depend on exactly one of them: the CPU
build by default, the GPU build when ``ERNIEKIT_PADDLE=paddlepaddle-gpu`` is set at install time
(see README, "Installing on GPU machines").

Shipped recipes and the presets they include live in the repository's top-level ``recipes/`` and
``configs/`` and travel inside the package as ``erniekit/recipes/`` and ``erniekit/configs/`` (copied in
by ``build_py`` below); the sample data and tokenizer are package data.
``MANIFEST.in`` puts both into the sdist, so a wheel built from the sdist has them too.
"""

import os
import re
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PADDLE_VERSION = "~=3.3.1"
paddle_dist = os.environ.get("ERNIEKIT_PADDLE", "paddlepaddle")
if paddle_dist not in ("paddlepaddle", "paddlepaddle-gpu"):
    raise SystemExit(f"ERNIEKIT_PADDLE must be 'paddlepaddle' or 'paddlepaddle-gpu', got {paddle_dist!r}")


class BuildPyWithRecipes(build_py):
    """build_py that also copies the top-level ``recipes/`` and ``configs/`` into the built package."""

    def run(self):
        super().run()
        for recipe in sorted([*Path("recipes").rglob("*.yaml"), *Path("configs").rglob("*.yaml")]):
            target = Path(self.build_lib, "erniekit", recipe)
            self.mkpath(str(target.parent))
            self.copy_file(str(recipe), str(target))


version = re.search(r'__version__ = "([^"]+)"', Path("erniekit/__init__.py").read_text()).group(1)

setup(
    name="erniekit",
    version=version,
    description="PaddlePaddle-native training and fine-tuning of ERNIE 4.5 and Llama-family language models",
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["erniekit", "erniekit.*"]),
    package_data={
        "erniekit": [
            "data/samples/*.json",
            "data/samples/*.jsonl",
            "data/samples/*/*",
            "ops/csrc/*.cc",
            "webui/static/*",  # the page: plain files, nothing fetched from elsewhere
        ]
    },
    cmdclass={"build_py": BuildPyWithRecipes},
    install_requires=[
        f"{paddle_dist}{PADDLE_VERSION}",
        "numpy>=1.26,<3",
        "pyyaml>=6.0,<7",
        "datasets>=3.0,<6",
        # Parquet/Arrow data files are read with it directly (datasets depends on it too); the reader
        # API used (parquet.ParquetFile, ipc.open_file/open_stream) has been stable since 15
        "pyarrow>=15,<30",
        "visualdl>=2.5,<3",
        "safetensors>=0.4.3,<1",
        "sentencepiece>=0.2,<0.3",
        "tokenizers>=0.20,<1",
        "tqdm>=4.66,<5",
        "jinja2>=3.1,<4",
        # erniekit serve: whatever erniekit trains it serves, so the (small, pure-Python) web stack is
        # part of the base install rather than an extra
        "fastapi>=0.115,<1",
        "uvicorn>=0.30,<1",
    ],
    extras_require={
        # Parity tests compare against Hugging Face transformers on torch CPU. torch 2.13.0 is pinned
        # exactly: it is the CPU wheel this project's machines install without CUDA downloads.
        "test": [
            "pytest>=8,<10",
            "ruff==0.17.6",
            "hypothesis>=6.100,<7",
            "torch==2.13.0",
            "transformers>=5.0,<6",
            "peft>=0.17,<1",
            "gguf>=0.17,<1",
            "reasoning-gym==0.1.25",
            "openai>=1.50,<4",  # the server's tests drive it with the official client
            "selenium>=4.20,<5",  # the web UI's test drives Debian's chromium through chromium-driver
            # llama.cpp itself loads our GGUF exports; PyPI has only its source package, which the
            # Makefile builds without the multimodal and tool targets (~10 min on 2 cores, then cached)
            "llama-cpp-python==0.3.36",
            # the wheel test builds an sdist and a wheel without build isolation (no downloads)
            "build>=1.2,<2",
            "setuptools>=70.1",
        ],
        # make bench: the torch peers (pinned like the test extra's) and TRL for the DPO / GRPO rows
        "bench": ["torch==2.13.0", "transformers>=5.0,<6", "peft>=0.17,<1", "trl==1.16.0"],
        "gguf": ["gguf>=0.17,<1"],
        "rl": ["reasoning-gym==0.1.25"],  # verifiable-reward task generators for GRPO/PPO prompts
    },
    entry_points={"console_scripts": ["erniekit=erniekit.cli:main"]},
)
