"""The vision-language families against transformers (torch CPU) on tiny random weights: the image
processor, logits (text only, one image, two images of different sizes, a video, a left-padded batch
mixing text-only and image prompts), 20 greedy tokens with an image, gradients, and our save loading
in transformers. Images are random pixels; each comparison uses the reference processor's output for
the reference model and ours for ours."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import paddle
import pytest
import torch
from PIL import Image

from erniekit.data.images import ImageInputs
from erniekit.models import family, image_processor, load_model, save_pretrained
from erniekit.models.common.weights import TensorSource, rule_to_internal
from tests.helpers import VL_TOKENS, rel_err, tiny_hf_ernie_vl, tiny_hf_paddleocr_vl

IMG, START, END = (
    VL_TOKENS["image_token_id"],
    VL_TOKENS["image_start_token_id"],
    VL_TOKENS["image_end_token_id"],
)
VIDEO, VSTART, VEND = (VL_TOKENS[k] for k in ("video_token_id", "video_start_token_id", "video_end_token_id"))


@dataclass
class Setup:
    name: str
    hf: object
    ours: object
    path: object

    def reference_processor(self):
        if self.name == "paddleocr_vl":
            from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import (
                PaddleOCRVLImageProcessorPil,
            )

            return PaddleOCRVLImageProcessorPil()
        from transformers.models.ernie4_5_vl_moe.image_processing_pil_ernie4_5_vl_moe import (
            Ernie4_5_VLMoeImageProcessorPil,
        )

        return Ernie4_5_VLMoeImageProcessorPil()

    def type_ids(self, ids: torch.Tensor) -> dict:
        """What the reference needs besides input_ids: its token-type tensors (we derive ours)."""
        mm = (ids == IMG).long() + 2 * (ids == VIDEO).long()
        if self.name == "paddleocr_vl":
            return dict(mm_token_type_ids=mm)
        vision = (
            (ids == IMG) | (ids == START) | (ids == END) | (ids == VIDEO) | (ids == VSTART) | (ids == VEND)
        )
        return dict(mm_token_type_ids=mm, moe_mm_token_type_ids=vision.long())

    def vision_tokens(self) -> list[int]:
        """Tokens we never generate (their embeddings are images); the reference is told to suppress them."""
        return self.ours.vision_token_ids.tolist()

    def pixels(self, inputs: ImageInputs) -> torch.Tensor:
        """Our pixel_values as the reference takes them (PaddleOCR-VL: [P, C, p, p] for its conv)."""
        x = torch.tensor(inputs.pixel_values)
        return x.reshape(x.shape[0], 3, 14, 14) if self.name == "paddleocr_vl" else x


BUILDERS = {"ernie4_5_vl": tiny_hf_ernie_vl, "paddleocr_vl": tiny_hf_paddleocr_vl}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def setup(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param)
    hf = BUILDERS[request.param](path)
    ours = load_model(path)
    ours.eval()
    return Setup(request.param, hf, ours, path)


def images(*sizes, seed=0):
    rs = np.random.RandomState(seed)
    return [Image.fromarray((rs.rand(h, w, 3) * 255).astype("uint8")) for h, w in sizes]


def with_image(n: int, head=(5, 6, 7), tail=(8, 9)) -> list[int]:
    return [*head, START, *([IMG] * n), END, *tail]


def reference_logits(setup: Setup, rows, pictures: ImageInputs | None, videos: ImageInputs | None = None):
    s = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (s - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (s - len(r)) + [1] * len(r) for r in rows])
    kw = setup.type_ids(ids)
    if pictures is not None:
        kw.update(pixel_values=setup.pixels(pictures), image_grid_thw=torch.tensor(pictures.grid_thw))
    if videos is not None:
        kw.update(
            pixel_values_videos=torch.tensor(videos.pixel_values),
            video_grid_thw=torch.tensor(videos.grid_thw),
        )
    with torch.no_grad():
        return setup.hf(input_ids=ids, attention_mask=mask, **kw).logits.numpy(), mask.numpy().astype(bool)


def our_logits(setup: Setup, rows, pictures: ImageInputs | None, videos: ImageInputs | None = None):
    s = max(len(r) for r in rows)
    ids = paddle.to_tensor([[0] * (s - len(r)) + r for r in rows])
    mask = paddle.to_tensor([[False] * (s - len(r)) + [True] * len(r) for r in rows])
    kw = {}
    if pictures is not None:
        kw.update(pixel_values=paddle.to_tensor(pictures.pixel_values), image_grid_thw=pictures.grid_thw)
    if videos is not None:
        kw.update(pixel_values_videos=paddle.to_tensor(videos.pixel_values), video_grid_thw=videos.grid_thw)
    return setup.ours(ids, key_padding=mask, **kw).logits.numpy()


def test_image_processor_matches_the_reference(setup):
    """Sizes around the rounding edges (a 70-pixel side rounds to 56: ties to even), a tiny image, tall and
    wide ones, and RGBA / greyscale / palette inputs give the reference's pixel_values and grids exactly."""
    ours, ref = image_processor(setup.ours.args), setup.reference_processor()
    sizes = [(50, 70), (70, 70), (42, 98), (8, 8), (40, 100), (1000, 30), (300, 451), (13, 2000)]
    pics = images(*sizes, seed=3)
    rgba = Image.fromarray((np.random.RandomState(4).rand(60, 90, 4) * 255).astype("uint8"), "RGBA")
    pics += [rgba, pics[0].convert("L"), pics[1].convert("P")]
    for pic in pics:
        want = ref(images=[pic], return_tensors="np")
        got = ours([pic])
        assert got.grid_thw.tolist() == want["image_grid_thw"].tolist(), pic.size
        assert np.array_equal(
            got.pixel_values, np.asarray(want["pixel_values"]).reshape(got.pixel_values.shape)
        )
    with pytest.raises(ValueError, match="aspect ratio 201:1 of a 2010x10 image is over the limit of 200:1"):
        ours(images((10, 2010)))


def test_smart_resize_matches_the_reference_over_many_sizes(setup):
    """Every (height, width) of a grid from 1 to 4000 pixels, plus extreme ratios: the same target size
    or the same refusal as transformers' smart_resize for this family."""
    if setup.name == "paddleocr_vl":
        from transformers.models.paddleocr_vl.image_processing_pil_paddleocr_vl import smart_resize
    else:
        from transformers.models.ernie4_5_vl_moe.image_processing_pil_ernie4_5_vl_moe import smart_resize
    ours = image_processor(setup.ours.args)
    sides = sorted({*range(1, 120), *np.unique(np.geomspace(120, 4000, 200).astype(int))})
    sizes = [(h, w) for h in sides[::3] for w in sides[::2]] + [(1, 199), (1, 201), (3, 700), (5000, 20)]
    for h, w in sizes:
        try:
            want = smart_resize(
                h, w, factor=ours.factor, min_pixels=ours.min_pixels, max_pixels=ours.max_pixels
            )
        except ValueError:
            with pytest.raises(ValueError, match="aspect ratio"):
                ours.smart_resize(h, w)
            continue
        assert ours.smart_resize(h, w) == want, (h, w)


def test_text_only_logits_match(setup):
    rows = [[3, 17, 42, 8, 61, 5, 77], [9, 33, 4]]
    ref, real = reference_logits(setup, rows, None)
    assert np.abs(ref).max() > 1.0
    assert np.abs(our_logits(setup, rows, None) - ref)[real].max() <= 1e-4


@pytest.mark.parametrize("sizes", [[(50, 70)], [(50, 70), (40, 100)]], ids=["one-image", "two-images"])
def test_logits_with_images_match(setup, sizes):
    pics = image_processor(setup.ours.args)(images(*sizes))
    counts = pics.tokens(setup.ours.args.vision.spatial_merge_size)
    row = with_image(counts[0])
    for n in counts[1:]:
        row += with_image(n, head=(10,), tail=(11, 12))
    ref, _ = reference_logits(setup, [row], pics)
    assert np.abs(our_logits(setup, [row], pics) - ref).max() <= 1e-4


def test_left_padded_batch_mixing_text_and_images_matches(setup):
    proc = image_processor(setup.ours.args)
    a, b = proc(images((50, 70), seed=1)), proc(images((40, 100), seed=2))
    m = setup.ours.args.vision.spatial_merge_size
    rows = [with_image(a.tokens(m)[0]), [12, 13, 14, 15, 16], with_image(b.tokens(m)[0], tail=(8, 9, 20))]
    both = ImageInputs.concat([a, b])
    ref, real = reference_logits(setup, rows, both)
    assert np.abs(our_logits(setup, rows, both) - ref)[real].max() <= 1e-4


@pytest.mark.parametrize("setup", ["ernie4_5_vl"], indirect=True)  # PaddleOCR-VL takes no video
def test_video_logits_match(setup):
    proc = image_processor(setup.ours.args)
    video = proc.video(images((56, 56), (56, 56), seed=5))  # two frames of 4 x 4 patches
    n = video.tokens(2)[0] // 2  # frames are merged in pairs
    row = [5, 6, VSTART, *([VIDEO] * n), VEND, 7]
    ref, _ = reference_logits(setup, [row], None, video)
    assert np.abs(our_logits(setup, [row], None, video) - ref).max() <= 1e-4


def test_greedy_generation_with_an_image_matches_20_tokens(setup):
    pics = image_processor(setup.ours.args)(images((50, 70), seed=6))
    prompt = with_image(pics.tokens(setup.ours.args.vision.spatial_merge_size)[0])
    ids = torch.tensor([prompt])
    with torch.no_grad():
        ref = setup.hf.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=setup.pixels(pics),
            image_grid_thw=torch.tensor(pics.grid_thw),
            max_new_tokens=20,
            min_new_tokens=20,
            do_sample=False,
            suppress_tokens=setup.vision_tokens(),
            **setup.type_ids(ids),
        )[0, len(prompt) :].tolist()
    assert setup.ours.generate([prompt], max_new_tokens=20, images=[pics])[0] == ref
    assert len(set(ref)) > 5, "continuation is degenerate; the test would not catch much"


def test_batched_generation_with_left_padding_matches_each_prompt_alone(setup):
    """Image and text-only prompts decoded together (left-padded, one batch) give, row by row, the
    reference's greedy tokens for that prompt alone."""
    proc = image_processor(setup.ours.args)
    m = setup.ours.args.vision.spatial_merge_size
    a, b = proc(images((50, 70), seed=11)), proc(images((40, 100), seed=12))
    rows = [with_image(a.tokens(m)[0]), [12, 13, 14, 15, 16], with_image(b.tokens(m)[0], tail=(8, 9, 20))]
    got = setup.ours.generate(rows, max_new_tokens=10, images=[a, None, b])
    for row, pics, tokens in zip(rows, [a, None, b], got):
        ids = torch.tensor([row])
        kw = {}
        if pics is not None:
            kw = dict(
                pixel_values=setup.pixels(pics),
                image_grid_thw=torch.tensor(pics.grid_thw),
                **setup.type_ids(ids),
            )
        with torch.no_grad():
            ref = setup.hf.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, min_new_tokens=10,
                do_sample=False, suppress_tokens=setup.vision_tokens(), **kw,
            )  # fmt: skip
        assert tokens == ref[0, len(row) :].tolist()


def test_gradients_match(setup, tmp_path):
    """Per-parameter gradients of a cross-entropy through an image prompt; transformers' own save
    writes its gradients in the checkpoint layout, which our rules then read back."""
    pics = image_processor(setup.ours.args)(images((50, 70), (40, 100), seed=7))
    counts = pics.tokens(setup.ours.args.vision.spatial_merge_size)
    row = with_image(counts[0]) + with_image(counts[1], head=(10,), tail=(11,))
    labels = np.random.RandomState(8).randint(0, 250, len(row))
    hf = copy.deepcopy(setup.hf)
    hf.zero_grad()
    ids = torch.tensor([row])
    logits = hf(
        input_ids=ids,
        pixel_values=setup.pixels(pics),
        image_grid_thw=torch.tensor(pics.grid_thw),
        **setup.type_ids(ids),
    ).logits
    torch.nn.functional.cross_entropy(logits[0], torch.tensor(labels)).backward()
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(p.grad if p.grad is not None else torch.zeros_like(p))
    hf.save_pretrained(tmp_path)
    source = TensorSource(tmp_path)
    hf_rules = family(setup.ours.args.family).hf
    if hasattr(hf_rules, "canonical_names"):
        source.rename(hf_rules.canonical_names(source.keys()))

    ours = setup.ours
    ours.clear_gradients()
    out = ours(
        paddle.to_tensor([row]),
        pixel_values=paddle.to_tensor(pics.pixel_values),
        image_grid_thw=pics.grid_thw,
    ).logits
    paddle.nn.functional.cross_entropy(out[0], paddle.to_tensor(labels)).backward()
    params = {n: p for n, p in ours.named_parameters() if not p.stop_gradient}
    checked = 0
    for rule in hf_rules.weight_rules(ours.args, "hf"):
        if rule.internal in params:
            want = rule_to_internal(rule, source.get, transpose=True)
            assert rel_err(params[rule.internal].grad.numpy(), want) <= 1e-4, rule.internal
            checked += 1
    assert checked == len(params)
    ours.clear_gradients()


def test_our_save_loads_in_transformers(setup, tmp_path):
    from transformers import AutoModelForImageTextToText

    save_pretrained(setup.ours, tmp_path)
    hf = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    pics = image_processor(setup.ours.args)(images((50, 70), seed=9))
    row = with_image(pics.tokens(setup.ours.args.vision.spatial_merge_size)[0])
    ids = torch.tensor([row])
    with torch.no_grad():
        ref = hf(
            input_ids=ids,
            pixel_values=setup.pixels(pics),
            image_grid_thw=torch.tensor(pics.grid_thw),
            **setup.type_ids(ids),
        ).logits.numpy()
    assert np.abs(our_logits(setup, [row], pics) - ref).max() <= 1e-4


def test_the_comparison_catches_wrong_routing_and_positions(setup, monkeypatch):
    """The tolerance above is tight enough to see the mistakes a VL port makes: every token sent to the
    text experts (transformers' behaviour without moe_mm_token_type_ids) or 1D positions for images."""
    from erniekit.models.common import multimodal

    pics = image_processor(setup.ours.args)(images((50, 70), (40, 100), seed=10))
    counts = pics.tokens(setup.ours.args.vision.spatial_merge_size)
    row = with_image(counts[0]) + with_image(counts[1], head=(10,), tail=(11,))
    ref, _ = reference_logits(setup, [row], pics)
    assert np.abs(our_logits(setup, [row], pics) - ref).max() <= 1e-4
    if setup.ours.args.vision_moe_intermediate_size:
        with monkeypatch.context() as m:
            m.setitem(setup.ours._buffers, "vision_token_ids", paddle.to_tensor([-1], "int64"))
            assert np.abs(our_logits(setup, [row], pics) - ref).max() > 1e-2
    with monkeypatch.context() as m:

        def flat(ids, real, image_grids, video_grids, v):
            pos = np.broadcast_to(np.arange(ids.shape[1]), (3, *ids.shape)).copy()
            return pos, np.zeros(ids.shape[0], np.int64)

        m.setattr(multimodal, "multimodal_positions", flat)
        assert np.abs(our_logits(setup, [row], pics) - ref).max() > 1e-2


def test_plan_counts_the_released_shapes_exactly():
    """erniekit plan's parameter count against a meta-device build of transformers' configs: ERNIE 4.5
    VL's defaults (which its docstring names 28B-A3B) and PaddleOCR-VL's (0.9B, untied head)."""
    from transformers import (
        Ernie4_5_VLMoeConfig,
        Ernie4_5_VLMoeForConditionalGeneration,
        PaddleOCRVLConfig,
        PaddleOCRVLForConditionalGeneration,
    )

    from erniekit.models import flavor_args
    from erniekit.parallel.estimate import total_params

    untied = dict(tie_word_embeddings=False, text_config=dict(tie_word_embeddings=False))
    with torch.device("meta"):
        ernie = Ernie4_5_VLMoeForConditionalGeneration(Ernie4_5_VLMoeConfig())
        ocr = PaddleOCRVLForConditionalGeneration(PaddleOCRVLConfig(**untied))
    for hf, flavor in ((ernie, "ernie4_5_vl/28b-a3b"), (ocr, "paddleocr_vl/0.9b")):
        # the expert-score correction biases are frozen Parameters there and buffers here: not counted
        trainable = sum(p.numel() for p in hf.parameters() if p.requires_grad)
        assert total_params(flavor_args(flavor)) == trainable, flavor
