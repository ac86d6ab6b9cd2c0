"""``erniekit chat --image`` on tiny vision-language models of both families: the answer is the greedy
continuation of the prompt with the image's placeholders, and it depends on the image."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from erniekit.chat import reply, user_message
from erniekit.inference.load import load_for_inference
from erniekit.models import build_model, family, save_pretrained
from erniekit.tokenizer import load_tokenizer


def chat(*args):
    return subprocess.run(
        [sys.executable, "-m", "erniekit", "chat", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="module", params=["ernie4_5_vl", "paddleocr_vl"])
def model_dir(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(request.param)
    model = build_model(f"{request.param}/debug", seed=0)
    for name, p in model.named_parameters():  # far from uniform, so the image changes the answer
        if "norm" not in name:
            p.set_value(p * 15)
    save_pretrained(model, out)
    tokenizer = load_tokenizer("samples://ernie_vl_tokenizer")
    tokenizer.set_template(family(request.param).hf.CHAT_TEMPLATE)
    tokenizer.save(out)
    rng = np.random.RandomState(0)
    for name, size in (("a.png", (60, 80, 3)), ("b.png", (90, 50, 3))):
        Image.fromarray((rng.rand(*size) * 255).astype("uint8")).save(out / name)
    return out


def test_chat_answers_with_an_image(model_dir):
    a = chat(model_dir, "--image", model_dir / "a.png", "--prompt", "Describe it.", "--max-new-tokens", 12)
    assert a.returncode == 0, a.stderr[-2000:]
    tokenizer, model, processor = load_for_inference(model_dir)
    message = user_message("Describe it.", [str(model_dir / "a.png")])
    want = reply(tokenizer, model, [message], max_new_tokens=12, processor=processor)
    # the stream holds back a trailing incomplete UTF-8 sequence (decoded as U+FFFD)
    assert a.stdout == want.rstrip("\ufffd") + "\n" and want.strip()
    b = chat(model_dir, "--image", model_dir / "b.png", "--prompt", "Describe it.", "--max-new-tokens", 12)
    assert b.returncode == 0 and b.stdout != a.stdout


def test_interactive_image_attach_and_a_bad_image_keeps_the_session(model_dir):
    script = f"/image {model_dir / 'missing.png'}\nhi\n/image {model_dir / 'a.png'}\nDescribe it.\n/exit\n"
    proc = subprocess.run(
        [sys.executable, "-m", "erniekit", "chat", str(model_dir), "--max-new-tokens", "12"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "missing.png: image file not found" in proc.stdout
    one_shot = chat(
        model_dir, "--image", model_dir / "a.png", "--prompt", "Describe it.", "--max-new-tokens", 12
    )
    assert one_shot.stdout.strip() in proc.stdout


def test_unreadable_image_and_text_model_errors(model_dir, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really")
    bad = chat(model_dir, "--image", tmp_path / "bad.png", "--prompt", "x")
    assert bad.returncode == 2 and "bad.png: not a readable image" in bad.stderr.splitlines()[-1]
    text_dir = tmp_path / "text"
    save_pretrained(build_model("ernie4_5/debug", seed=0), text_dir)
    load_tokenizer("samples://ernie_tokenizer").save(text_dir)
    refused = chat(text_dir, "--image", model_dir / "a.png", "--prompt", "x")
    assert refused.returncode == 2 and "reads no images (--image)" in refused.stderr.splitlines()[-1]
