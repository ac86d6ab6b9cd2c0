"""Small builders shared by tests (tiny random HF models, numpy conversions, watching a running job)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def tiny_hf_ernie(path, moe: bool = False, seed: int = 0, **overrides):
    """Save a tiny random transformers ERNIE 4.5 (dense or MoE) to ``path``; returns the torch model.

    Weights are drawn wider than HF's default (std 0.02) so that logits and greedy continuations are
    far from uniform and a comparison can actually fail.
    """
    import torch
    from transformers import Ernie4_5_MoeConfig, Ernie4_5_MoeForCausalLM, Ernie4_5Config, Ernie4_5ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        initializer_range=0.35,
        rope_theta=10000.0,
    )
    if moe:
        cfg = Ernie4_5_MoeConfig(
            **{
                **common,
                "num_hidden_layers": 3,
                "moe_intermediate_size": 24,
                "moe_k": 2,
                "moe_num_experts": 4,
                "moe_num_shared_experts": 1,
                **overrides,
            }
        )
        model = Ernie4_5_MoeForCausalLM(cfg)
    else:
        model = Ernie4_5ForCausalLM(Ernie4_5Config(**{**common, "num_hidden_layers": 2, **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "e_score_correction_bias" in name:
                p.copy_(torch.randn_like(p) * 0.05)
            elif "layernorm" in name or name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
    model.eval().save_pretrained(path)
    return model


def tiny_hf_model(kind: str, path, seed: int = 0):
    """A tiny random transformers model of ``kind`` saved to ``path`` (wide weights, see tiny_hf_ernie)."""
    if kind in ("ernie-dense", "ernie-moe"):
        return tiny_hf_ernie(path, moe=kind == "ernie-moe", seed=seed)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.35,
        rms_norm_eps=1e-5,
    )
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))
    elif kind == "llama3-rope":
        scaling = {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
            "rope_theta": 500000.0,
        }
        model = LlamaForCausalLM(
            LlamaConfig(
                **common, tie_word_embeddings=True, rope_parameters=scaling, max_position_embeddings=128
            )
        )
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False, use_sliding_window=False))
    else:
        raise ValueError(kind)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
    model.eval().save_pretrained(path)
    return model


# token ids of the tiny VL models (vocabulary 256): image placeholder, start, end; video placeholder, ...
VL_TOKENS = dict(
    image_token_id=250,
    image_start_token_id=251,
    image_end_token_id=252,
    video_token_id=253,
    video_start_token_id=254,
    video_end_token_id=255,
)


def widen_torch(model, scale: float = 0.3) -> None:
    """Random weights far from transformers' init (std 0.02), so logits and routing are far from uniform
    and a wrong layer, position or expert choice shows; norms near 1, biases and correction biases small."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "e_score_correction_bias" in name:
                p.copy_(torch.randn_like(p) * 0.05)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * scale)


# the tiny decoder both VL families' parity models share
TINY_VL_TEXT = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    pad_token_id=0,
)


def tiny_hf_ernie_vl(path, seed: int = 0):
    """A tiny random transformers ERNIE 4.5 VL (2 decoder layers: dense, then text+vision MoE; a 2-block
    ViT) saved to ``path``; returns the torch model."""
    import torch
    from transformers import Ernie4_5_VLMoeConfig, Ernie4_5_VLMoeForConditionalGeneration

    torch.manual_seed(seed)
    cfg = Ernie4_5_VLMoeConfig(
        text_config=dict(
            **TINY_VL_TEXT,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [3, 3, 2]},
            moe_num_experts=4,
            moe_k=2,
            moe_intermediate_size=[32, 16],
            moe_num_shared_experts=1,
            mlp_layer_types=["dense", "sparse"],
        ),
        vision_config=dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=64),
        **VL_TOKENS,
    )
    model = Ernie4_5_VLMoeForConditionalGeneration(cfg)
    widen_torch(model)
    model.eval().save_pretrained(path)
    return model


def tiny_hf_paddleocr_vl(path, seed: int = 0):
    """A tiny random transformers PaddleOCR-VL (2-layer ERNIE decoder with 3D NeoX rotary, a 2-layer
    SigLIP encoder on a 6 x 6 position table) saved to ``path``; returns the torch model."""
    import torch
    from transformers import PaddleOCRVLConfig, PaddleOCRVLForConditionalGeneration

    torch.manual_seed(seed)
    cfg = PaddleOCRVLConfig(
        text_config=dict(
            **TINY_VL_TEXT,
            head_dim=16,
            rope_parameters={"rope_type": "default", "rope_theta": 500000.0, "mrope_section": [2, 3, 3]},
            tie_word_embeddings=False,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=84
        ),
        image_token_id=VL_TOKENS["image_token_id"],
        vision_start_token_id=VL_TOKENS["image_start_token_id"],
        vision_end_token_id=VL_TOKENS["image_end_token_id"],
        video_token_id=VL_TOKENS["video_token_id"],
        tie_word_embeddings=False,
    )
    model = PaddleOCRVLForConditionalGeneration(cfg)
    widen_torch(model)
    model.eval().save_pretrained(path)
    return model


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def debug_recipe(tmp_path, *overrides, recipe="ernie4_5/debug_sft"):
    """A shipped debug recipe pointed at ``tmp_path``, quiet, with extra ``overrides``."""
    from erniekit.config import load_recipe

    base = [
        f"train.output_dir={tmp_path / 'out'}",
        f"data.cache_dir={tmp_path.parent / 'datasets-cache'}",
        "logging.progress=none",
        "logging.visualdl=false",
    ]
    return load_recipe(recipe, [*base, *overrides])


def erniekit(*args, timeout: float = 600, fails: bool = False) -> subprocess.CompletedProcess:
    """``python -m erniekit ARGS`` as a user runs it; fails the test with its stderr unless it succeeds
    (or, ``fails``, unless it ends with an error message and no traceback)."""
    proc = subprocess.run(
        [sys.executable, "-m", "erniekit", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if fails:
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def wait_for_step(proc, out: Path, step: int, timeout: float = 300) -> None:
    """Poll ``out/metrics.jsonl`` until the running ``proc`` has logged ``step`` (or ended, or time is up)."""
    from erniekit.trainer.metrics import read_metrics

    path = Path(out) / "metrics.jsonl"
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.is_file() and any(r.get("step", 0) >= step for r in read_metrics(path)):
            return
        time.sleep(0.05)


@contextlib.contextmanager
def running_webui(root: Path, *args: str, command=None, env=None, timeout: float = 60):
    """``erniekit webui`` started in ``root`` on a free port (``command``: the erniekit to run, default
    this checkout's); yields its URL, stops it (SIGINT) after."""
    import signal
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [*(command or [sys.executable, "-m", "erniekit"]), "webui", "--port", str(port), *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                urllib.request.urlopen(url + "api/info", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"erniekit webui did not start:\n{proc.stdout.read()}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
