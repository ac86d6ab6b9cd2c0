"""Vision-language pieces on their own: 3D positions, checkpoint layouts and configs, chat templates with
image parts, placeholder expansion, image errors, and attention inside images."""

from __future__ import annotations

import base64
import io
import json

import jinja2
import numpy as np
import paddle
import pytest
from PIL import Image

from erniekit.data.images import ImageProcessor, load_image
from erniekit.data.multimodal import encode_conversation, open_image
from erniekit.data.positions import multimodal_positions
from erniekit.errors import CheckpointError, DataError
from erniekit.models import build_model, flavor_args, image_processor, load_model, save_pretrained
from erniekit.models.common.weights import save_safetensors_dir, to_external
from erniekit.models.ernie4_5_vl import hf as ernie_vl_hf
from erniekit.ops import segment_attention
from erniekit.tokenizer import load_tokenizer
from erniekit.tokenizer.templates import ernie4_5_vl, paddleocr_vl

V = flavor_args("ernie4_5_vl/debug").vision
IMG, S, E = V.image_token_id, V.image_start_token_id, V.image_end_token_id


def test_positions_follow_the_reference_counter():
    """transformers' get_rope_index on [5,6,7,<s>,I x 4,<e>,8,9] with grid [1,4,4] (measured there):
    the counter advances by max(h, w)/2 after the image, not by its 4 tokens."""
    ids = np.array([[5, 6, 7, S, IMG, IMG, IMG, IMG, E, 8, 9]])
    pos, delta = multimodal_positions(ids, None, [[1, 4, 4]], [], V)
    assert pos[0].tolist() == [[0, 1, 2, 3, 4, 4, 4, 4, 6, 7, 8]]
    assert pos[1].tolist() == [[0, 1, 2, 3, 4, 4, 5, 5, 6, 7, 8]]
    assert pos[2].tolist() == [[0, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8]]
    assert delta.tolist() == [-2]


def test_positions_of_two_adjacent_images_and_padding():
    """Two images with nothing between their placeholders still take one grid each, and left padding
    keeps position 0 while the real tokens count from 0."""
    ids = np.array([[0, 0, 5, *[IMG] * 4, *[IMG] * 4, 6]])
    real = ids != 0
    real[0, 2:] = True
    pos, delta = multimodal_positions(ids, real, [[1, 4, 4], [1, 2, 8]], [], V)
    assert pos[:, 0, :2].tolist() == [[0, 0]] * 3
    assert pos[1, 0, 2:].tolist() == [0, 1, 1, 2, 2, 3, 3, 3, 3, 7]  # h: second image at its own origin
    assert pos[2, 0, 2:].tolist() == [0, 1, 2, 1, 2, 3, 4, 5, 6, 7]
    assert delta.tolist() == [8 - 10]


def test_positions_refuse_mismatched_images():
    ids = np.array([[5, IMG, IMG, IMG, 6]])
    with pytest.raises(DataError, match=r"an image of grid \[1, 4, 4\] needs 4 placeholders"):
        multimodal_positions(ids, None, [[1, 4, 4]], [], V)
    with pytest.raises(DataError, match="more images than placeholders"):
        multimodal_positions(np.array([[5, 6]]), None, [[1, 4, 4]], [], V)
    with pytest.raises(DataError, match="more image placeholders than images"):
        multimodal_positions(np.array([[5, IMG, IMG, IMG, IMG]]), None, [], [], V)


def _logits(model, ids, pixels):
    return model(
        paddle.to_tensor([ids]),
        pixel_values=paddle.to_tensor(pixels.pixel_values),
        image_grid_thw=pixels.grid_thw,
    ).logits.numpy()


def _picture(h=56, w=84, seed=0):
    return Image.fromarray((np.random.RandomState(seed).rand(h, w, 3) * 255).astype("uint8"))


def test_ernie_paddle_layout_and_original_config_load(tmp_path):
    """ERNIE's -Paddle release: flat config (list-valued experts, freq_allocation, im_patch_id), ``ernie.``
    names, fused [in, out] weights, the vision tower at the top level (``vision_model.``)."""
    model = build_model("ernie4_5_vl/debug", seed=1)
    model.eval()
    a = model.args
    arrays = {k: v.numpy() for k, v in model.state_dict().items() if "usage" not in k}
    tensors = to_external(ernie_vl_hf.weight_rules(a, "paddle"), arrays, transpose=False)
    tensors = {
        k.removeprefix("ernie.") if k.startswith("ernie.vision_model.") else k: v for k, v in tensors.items()
    }
    assert any(k.startswith("vision_model.blocks.0.attn.qkv") for k in tensors)
    assert tensors["ernie.layers.1.mlp.moe_statics.e_score_correction_bias"].shape == (2, a.num_experts)
    save_safetensors_dir(tensors, tmp_path)
    v = a.vision
    original = {
        "model_type": "ernie4_5_moe_vl",
        "vocab_size": a.vocab_size,
        "hidden_size": a.hidden_size,
        "intermediate_size": a.intermediate_size,
        "num_hidden_layers": a.num_layers,
        "num_attention_heads": a.num_heads,
        "num_key_value_heads": a.num_kv_heads,
        "head_dim": a.head_dim,
        "rope_theta": a.rope_theta,
        "rms_norm_eps": a.rms_norm_eps,
        "moe_num_experts": [a.num_experts, a.num_experts],
        "moe_k": a.experts_per_token,
        "moe_intermediate_size": [a.moe_intermediate_size, a.vision_moe_intermediate_size],
        "moe_num_shared_experts": a.num_shared_experts,
        "moe_layer_start_index": [1, 1],
        "moe_layer_end_index": [1, 1],
        "freq_allocation": 2,
        "im_patch_id": v.image_token_id,
        "spatial_conv_size": 2,
        "temporal_conv_size": 2,
        "tie_word_embeddings": True,
        "vision_config": {
            "depth": v.depth,
            "embed_dim": v.hidden_size,
            "num_heads": v.num_heads,
            "mlp_ratio": 2,
        },
        **{k: getattr(v, k) for k in ("image_start_token_id", "image_end_token_id")},
        **{k: getattr(v, k) for k in ("video_token_id", "video_start_token_id", "video_end_token_id")},
    }
    (tmp_path / "config.json").write_text(json.dumps(original))
    loaded = load_model(tmp_path)
    loaded.eval()
    assert loaded.args.to_dict() == {
        **a.to_dict(),
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
    }
    pics = image_processor(a)([_picture()])
    ids = [5, S, *[IMG] * pics.tokens(2)[0], E, 6]
    assert np.array_equal(_logits(loaded, ids, pics), _logits(model, ids, pics))


def test_broken_vl_checkpoints_name_the_tensor(tmp_path):
    model = build_model("ernie4_5_vl/debug", seed=0)
    save_pretrained(model, tmp_path)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(tmp_path / "model.safetensors")
    name = "model.layers.1.mlp.gate.weight_1"
    save_file({k: v for k, v in tensors.items() if k != name}, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=f"missing tensor {name}"):
        load_model(tmp_path)
    tensors["model.vision_model.blocks.0.attn.qkv.weight"] = np.zeros((3, 3), np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"tensor model.vision_model.blocks.0.attn.qkv.weight has shape \[3, 3\]"
    ):
        load_model(tmp_path)


MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare "},
            {"type": "image", "image": "a.png"},
            {"type": "text", "text": " and "},
            {"type": "image_url", "image_url": {"url": "b.png"}},
        ],
    },
    {"role": "assistant", "content": "Same."},
    {"role": "user", "content": [{"type": "image", "image": "c.png"}, {"type": "text", "text": "And this?"}]},
]


def test_vl_templates_render_like_their_jinja():
    env = jinja2.Environment()
    for template in (ernie4_5_vl(), paddleocr_vl()):
        for msgs, gen in ((MESSAGES, True), (MESSAGES[:3], False)):
            want = env.from_string(template.jinja).render(messages=msgs, add_generation_prompt=gen)
            assert template.render_text(msgs, gen) == want, template.name
    text = ernie4_5_vl().render_text(MESSAGES[:2], add_generation_prompt=True)
    assert "User: Compare Picture 1:<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|> and Picture 2:" in text
    text = paddleocr_vl().render_text(MESSAGES[3:], add_generation_prompt=True)  # images before the text
    marker = "<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"
    assert text == f"<|begin_of_sentence|>User: {marker}And this?\nAssistant: "


def test_a_conversation_gets_one_placeholder_per_image_token(tmp_path):
    sizes = {"a.png": (56, 56), "b.png": (56, 112), "c.png": (112, 112)}
    for name, (h, w) in sizes.items():
        _picture(h, w).save(tmp_path / name)
    tok = load_tokenizer("samples://ernie_vl_tokenizer")
    processor = image_processor(flavor_args("ernie4_5_vl/debug"))
    ids, trainable, images, videos = encode_conversation(tok, processor, V, MESSAGES, True, base_dir=tmp_path)
    assert images.grid_thw.tolist() == [[1, 4, 4], [1, 4, 8], [1, 8, 8]] and videos is None
    assert ids.count(IMG) == 4 + 8 + 16 and ids.count(S) == ids.count(E) == 3
    assert not any(t for i, t in zip(ids, trainable) if i == IMG)
    first = ids.index(IMG)
    assert ids[first - 1] == S and ids[first + 4] == E
    missing = [{"role": "user", "content": [{"type": "image", "image": "missing.png"}]}]
    with pytest.raises(DataError, match=r"missing\.png: image file not found"):
        encode_conversation(tok, processor, V, missing, True, base_dir=tmp_path)


def test_text_templates_refuse_images():
    tok = load_tokenizer("samples://ernie_tokenizer")
    with pytest.raises(
        ValueError, match="message 1 has an image or video, but this chat template takes none"
    ):
        tok.encode_chat(MESSAGES[:2], add_generation_prompt=True)


def test_image_sources_and_their_errors(tmp_path):
    buf = io.BytesIO()
    _picture(30, 40).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    assert open_image(url).size == (40, 30)
    with pytest.raises(DataError, match="not fetched from the network"):
        open_image("https://example.com/x.png")
    with pytest.raises(DataError, match="not a readable image"):
        open_image("data:image/png;base64,aGVsbG8=")
    (tmp_path / "garbage.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"garbage\.jpg: not a readable image"):
        load_image(tmp_path / "garbage.jpg")
    Image.new("RGB", (6000, 4000)).save(tmp_path / "huge.png")
    with pytest.raises(DataError, match=r"huge\.png: image of 6000x4000 pixels is too large"):
        load_image(tmp_path / "huge.png")


def test_paddleocr_processor_is_raster_order():
    assert image_processor(flavor_args("paddleocr_vl/debug")).block_major is False
    ocr, ernie = ImageProcessor(block_major=False), ImageProcessor()
    picture = _picture(56, 56, seed=4)
    raster, blocks = ocr([picture]).pixel_values, ernie([picture]).pixel_values
    # patch (row 0, col 2) is the third in raster order and the fifth in merge-block order
    assert np.array_equal(raster[2], blocks[4]) and not np.array_equal(raster[2], blocks[2])


def test_segment_attention_is_attention_inside_each_segment():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((10, 2, 8)).astype("float32") for _ in range(3))
    lengths = [4, 6]
    out = segment_attention(*(paddle.to_tensor(x) for x in (q, k, v)), lengths).numpy().reshape(10, 2, 8)
    seg = np.repeat([0, 1], lengths)
    for h in range(2):
        scores = q[:, h] @ k[:, h].T / np.sqrt(8)
        scores[seg[:, None] != seg[None, :]] = -np.inf
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        np.testing.assert_allclose(out[:, h], (probs / probs.sum(-1, keepdims=True)) @ v[:, h], atol=1e-5)
