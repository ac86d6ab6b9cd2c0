"""optim.moment_dtype=bfloat16: AdamW's moments stored in bf16 (ERNIEKit use_lowprecision_moment).

Paddle's own ``use_lowprecision_moment`` leaves fp32 parameters with fp32 moments (checked below), so
erniekit's LowPrecisionMomentAdamW does it: widen, Paddle's update in fp32, round back to nearest-even.
"""

import numpy as np
import paddle
import pytest

from erniekit.config.schema import OptimConfig
from erniekit.parallel.clip import GlobalNormClip
from erniekit.trainer.checkpoint import load_optimizer_arrays, optimizer_arrays
from erniekit.trainer.loop import Trainer
from erniekit.trainer.optim import LowPrecisionMomentAdamW, build_optimizer
from tests.helpers import debug_recipe

LR, WD, EPS, B1, B2 = 1e-2, 0.1, 1e-8, 0.9, 0.999


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), returned as float32."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32).view(np.float32)


def tiny_params(seed=0):
    """A decayed matrix and an undecayed bias, the bias at 3x the learning rate (as LoRA+ sets B's)."""
    rng = np.random.default_rng(seed)
    w = paddle.create_parameter([6, 5], "float32")
    b = paddle.create_parameter([5], "float32")
    w.set_value(rng.normal(size=(6, 5)).astype(np.float32))
    b.set_value(rng.normal(size=5).astype(np.float32))
    b.optimize_attr["learning_rate"] = 3.0
    return {"w": w, "b": b}


def copy_of(params):
    fresh = tiny_params()
    for k, p in fresh.items():
        p.set_value(params[k].numpy())
    return fresh


def tiny_grads(steps, seed=1):
    """Gradients spread over four decades, so the bf16 rounding of both moments matters."""
    rng = np.random.default_rng(seed)
    shapes = {"w": (6, 5), "b": (5,)}
    return [
        {
            k: (rng.normal(size=s) * 10 ** rng.uniform(-4, 0, size=s)).astype(np.float32)
            for k, s in shapes.items()
        }
        for _ in range(steps)
    ]


def optimizer(params, moment_dtype, max_norm=0.0):
    cfg = OptimConfig(lr=LR, weight_decay=WD, eps=EPS, beta1=B1, beta2=B2, moment_dtype=moment_dtype)
    return build_optimizer(list(params.values()), cfg, GlobalNormClip(max_norm))


def run(params, opt, grads, lrs):
    for g, lr in zip(grads, lrs):
        loss = sum((params[k] * paddle.to_tensor(g[k])).sum() for k in params)  # d loss / d p = g
        loss.backward()
        opt.set_lr(lr)
        opt.step()
        opt.clear_grad()


def moments(opt, params) -> dict[str, np.ndarray]:
    return {k: v for k, v in optimizer_arrays(opt, params).items() if "::moment" in k}


def numpy_adamw(p0, grads, lrs, max_norm, round_moments):
    """Paddle's AdamW in numpy: clip the global norm, decoupled decay ``p *= 1 - lr * wd`` (matrices
    only), bias-corrected step ``lr * sqrt(1 - b2^t) / (1 - b1^t)`` with eps scaled by sqrt(1 - b2^t).
    ``round_moments``: the moments are stored rounded to bf16 after each update, which uses them unrounded."""
    p = {k: v.copy() for k, v in p0.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v2 = {k: np.zeros_like(v) for k, v in p.items()}
    for t, (g, lr) in enumerate(zip(grads, lrs), 1):
        norm = np.sqrt(sum(np.square(x, dtype=np.float32).sum() for x in g.values()))
        scale = max_norm / (norm + 1e-6) if max_norm and norm > max_norm else 1.0
        for k in ("w", "b"):
            gk = g[k] * np.float32(scale)
            lr_k = lr * (3.0 if k == "b" else 1.0)
            if k == "w":
                p[k] = p[k] * np.float32(1 - lr_k * WD)
            m[k] = np.float32(B1) * m[k] + np.float32(1 - B1) * gk
            v2[k] = np.float32(B2) * v2[k] + np.float32(1 - B2) * gk * gk
            step = np.float32(lr_k * np.sqrt(1 - B2**t) / (1 - B1**t))
            p[k] = p[k] - step * (m[k] / (np.sqrt(v2[k]) + np.float32(EPS * np.sqrt(1 - B2**t))))
            if round_moments:
                m[k], v2[k] = bf16_round(m[k]), bf16_round(v2[k])
    return p, m, v2


def test_paddle_lowprecision_moment_keeps_fp32_moments_for_fp32_parameters():
    """Why erniekit has its own class: Paddle's flag does nothing for the fp32 parameters a CPU trains."""
    params = tiny_params()
    opt = paddle.optimizer.AdamW(LR, parameters=list(params.values()), use_lowprecision_moment=True)
    run(params, opt, tiny_grads(1), [LR])
    assert {v.dtype for v in opt.state_dict().values() if isinstance(v, paddle.Tensor)} == {paddle.float32}


def test_bfloat16_moments_halve_the_optimizer_state():
    sizes = {}
    for dtype in ("float32", "bfloat16"):
        params = tiny_params()
        opt = optimizer(params, dtype)
        run(params, opt, tiny_grads(1), [LR])
        state = {k: v for k, v in opt.state_dict().items() if isinstance(v, paddle.Tensor)}
        moment = [v for k, v in state.items() if "_moment" in k]
        assert len(moment) == 4 and {v.dtype for v in moment} == {getattr(paddle, dtype)}
        sizes[dtype] = (
            sum(v.numel().item() * v.element_size() for v in moment),
            sum(v.numel().item() * v.element_size() for v in state.values()),
        )
    n, tensors = 6 * 5 + 5, 2
    assert sizes["float32"] == (8 * n, 8 * n + 2 * 4 * tensors)  # + the fp32 beta powers, [1] each
    assert sizes["bfloat16"] == (4 * n, 4 * n + 2 * 4 * tensors)
    assert isinstance(optimizer(tiny_params(), "bfloat16"), LowPrecisionMomentAdamW)
    assert type(optimizer(tiny_params(), "float32")) is paddle.optimizer.AdamW  # the default is untouched


def test_updates_match_numpy_adamw_with_bf16_rounded_moments():
    """Decay on matrices only, a per-parameter learning rate, a changing set_lr, an active clip."""
    params = tiny_params()
    p0 = {k: v.numpy().copy() for k, v in params.items()}
    grads, lrs, max_norm = tiny_grads(4), [LR, 0.5 * LR, 2 * LR, LR], 0.5
    opt = optimizer(params, "bfloat16", max_norm)
    run(params, opt, grads, lrs)
    p, m, v = numpy_adamw(p0, grads, lrs, max_norm, round_moments=True)
    for k in params:
        np.testing.assert_allclose(params[k].numpy(), p[k], rtol=0, atol=1e-6)
    got = moments(opt, params)
    for k in params:
        np.testing.assert_array_equal(got[f"{k}::moment1_0"], m[k])
        np.testing.assert_array_equal(got[f"{k}::moment2_0"], v[k])
    # the reference can tell: without rounding it is off by more than the tolerance
    p_fp32, _, _ = numpy_adamw(p0, grads, lrs, max_norm, round_moments=False)
    assert max(np.abs(params[k].numpy() - p_fp32[k]).max() for k in params) > 1e-5


def test_first_step_equals_stock_adamw_bit_for_bit():
    """From zero moments the update uses the unrounded moments: only their storage differs."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        params = tiny_params()
        opt = optimizer(params, dtype, max_norm=0.5)
        run(params, opt, tiny_grads(1), [LR])
        runs[dtype] = ({k: v.numpy() for k, v in params.items()}, moments(opt, params))
    (p32, m32), (p16, m16) = runs["float32"], runs["bfloat16"]
    for k in p32:
        np.testing.assert_array_equal(p16[k], p32[k])
    for k in m32:
        np.testing.assert_array_equal(m16[k], bf16_round(m32[k]))


def test_checkpoint_round_trip_keeps_the_bf16_bits():
    """optimizer_arrays widens bf16 to fp32 (exact); loading rounds back (exact): same next step."""
    grads = tiny_grads(4)
    params = tiny_params()
    opt = optimizer(params, "bfloat16")
    run(params, opt, grads[:3], [LR] * 3)
    saved = optimizer_arrays(opt, params)
    assert all(a.dtype == np.float32 for a in saved.values())
    assert all(np.array_equal(a, bf16_round(a)) for k, a in saved.items() if "::moment" in k)

    fresh = copy_of(params)  # new parameters (Paddle names accumulators once per parameter)
    reopened = optimizer(fresh, "bfloat16")
    load_optimizer_arrays(reopened, fresh, saved, "test")
    run(params, opt, grads[3:], [LR])
    run(fresh, reopened, grads[3:], [LR])
    for k in params:
        np.testing.assert_array_equal(fresh[k].numpy(), params[k].numpy())
    after, again = moments(opt, params), moments(reopened, fresh)
    for k in after:
        np.testing.assert_array_equal(again[k], after[k])


@pytest.mark.parametrize("saved_as,resumed_as", [("float32", "bfloat16"), ("bfloat16", "float32")])
def test_resume_may_change_the_moment_dtype(saved_as, resumed_as):
    params = tiny_params()
    opt = optimizer(params, saved_as)
    run(params, opt, tiny_grads(2), [LR] * 2)
    saved = optimizer_arrays(opt, params)
    fresh = copy_of(params)
    reopened = optimizer(fresh, resumed_as)
    load_optimizer_arrays(reopened, fresh, saved, "test")
    run(fresh, reopened, tiny_grads(1, seed=2), [LR])
    dtypes = {v.dtype for k, v in reopened.state_dict().items() if "_moment" in k}
    assert dtypes == {getattr(paddle, resumed_as)}
    # the loaded moments took part: the step differs from one taken from zero moments
    zero = copy_of(params)
    run(zero, optimizer(zero, resumed_as), tiny_grads(1, seed=2), [LR])
    assert not np.array_equal(fresh["w"].numpy(), zero["w"].numpy())


def test_debug_model_moments_differ_in_bits_but_weights_stay_close(tmp_path):
    """Five trainer steps on the debug ERNIE: different moment bits, weights within 2% of their movement
    (measured 0.2-0.3%); a moment never written back, or kept fp32, fails here."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        trainer = Trainer(
            debug_recipe(
                tmp_path / dtype,
                "data.max_seq_len=128",
                "optim.warmup_steps=1",
                "train.eval_every=0",
                "train.max_steps=5",
                "checkpoint.final=false",
                f"optim.moment_dtype={dtype}",
            )
        )
        start = {k: v.numpy().copy() for k, v in trainer.named_params.items()}
        trainer.fit()
        weights = {k: v.numpy().copy() for k, v in trainer.named_params.items()}
        runs[dtype] = (start, weights, moments(trainer.optimizer, trainer.named_params))
    (start, w32, m32), (start16, w16, m16) = runs["float32"], runs["bfloat16"]
    assert m32.keys() == m16.keys() and m16
    for k in m16:
        assert np.array_equal(m16[k], bf16_round(m16[k])), k  # stored in bf16
        assert not np.array_equal(m16[k], m32[k]), k
    for k in w32:
        np.testing.assert_array_equal(start[k], start16[k])
        moved = np.abs(w32[k] - start[k]).max()
        assert moved > 0, k
        assert np.abs(w16[k] - w32[k]).max() < 0.02 * moved, k
