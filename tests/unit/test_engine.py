"""The continuous-batching engine gives each request the tokens it gets alone (models.generation on a
batch of one), however requests join, leave, and move around the cache."""

import threading

import numpy as np
import pytest

from erniekit.inference.engine import Engine, QueueFull, Request, _Rows
from erniekit.models import build_model


@pytest.fixture(scope="module", params=["ernie4_5/debug", "ernie4_5/debug-moe"])
def model(request):
    return build_model(request.param, seed=0)


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 500, int(rng.integers(1, 24))).tolist() for _ in range(count)]


def alone(model, prompt, **kw) -> list[int]:
    return model.generate([prompt], **kw)[0]


def test_requests_joining_and_leaving_get_their_alone_tokens(model):
    ps = sorted(prompts(12), key=len)  # longer prompts join later: the rows move right for them
    lengths = [int(n) for n in np.random.default_rng(1).integers(1, 20, len(ps))]
    # 4 rows for 12 requests: they join as others leave, one prefill each; 32 columns force moves left
    # and right
    engine = Engine(model, max_batch=4, max_model_len=32, max_prefill_tokens=1)
    moves, shift = [], engine.rows.shift
    engine.rows.shift = lambda by: (moves.append(by), shift(by))
    done = engine.run([Request(p, max_new_tokens=n) for p, n in zip(ps, lengths)])
    for req, p, n in zip(done, ps, lengths):
        want = alone(model, p, max_new_tokens=min(n, 32 - len(p)))
        assert req.tokens == want and req.finish_reason == "length"
    assert not engine.busy and engine.rows.n == 0
    assert min(moves) < 0 < max(moves), moves  # both kinds of move happened

    # joining together (one left-padded prefill) into a cache that starts small and grows (8 -> 16 ->
    # 32 columns) as rows need it: the same tokens
    grown = Engine(model, max_batch=4, max_model_len=32)
    grown.rows = _Rows(model, 4, 32, start=8)
    again = grown.run([Request(p, max_new_tokens=n) for p, n in zip(ps, lengths)])
    assert [r.tokens for r in again] == [r.tokens for r in done] and grown.rows.capacity == 32

    # an idle engine given a prompt longer than its cache has columns yet (the bug: growing an empty
    # cache assigned an empty slice, which Paddle refuses)
    idle = Engine(model, max_batch=2, max_model_len=64)
    idle.rows = _Rows(model, 2, 64, start=8)
    (long,) = idle.run([Request(list(range(3, 23)), max_new_tokens=4)])
    assert long.error is None and long.tokens == alone(model, list(range(3, 23)), max_new_tokens=4)


def test_eos_stop_and_sampling_are_per_request(model):
    p = prompts(1, seed=3)[0]
    free = alone(model, p, max_new_tokens=10)
    eos = free[4]
    engine = Engine(model, max_batch=3, max_model_len=64)
    sampled = dict(temperature=1.0, top_p=0.9, top_k=50, seed=11)
    reqs = [
        Request(p, max_new_tokens=10, eos_token_ids=frozenset([eos])),
        Request(p, max_new_tokens=10, stop=lambda toks: len(toks) == 3),
        Request(p, max_new_tokens=10, **sampled),
        Request(prompts(1, seed=4)[0], max_new_tokens=10, **sampled),
    ]
    engine.run(reqs)
    assert reqs[0].tokens == free[: free.index(eos) + 1] and reqs[0].finish_reason == "stop"
    assert reqs[1].tokens == free[:3] and reqs[1].finish_reason == "stop"
    # the same seed gives the same sample whatever else is in the batch
    again = Engine(model, max_batch=1, max_model_len=64).run([Request(p, max_new_tokens=10, **sampled)])
    assert reqs[2].tokens == again[0].tokens and len(reqs[2].tokens) == 10


def test_background_loop_streams_cancels_and_bounds_the_queue(model):
    engine = Engine(model, max_batch=2, max_model_len=64, max_queue=2)
    streamed = []
    engine.start()
    try:
        p = prompts(1, seed=5)[0]
        first = engine.submit(Request(p, max_new_tokens=8, on_token=streamed.append))
        first.done.wait(60)
        assert streamed == first.tokens == alone(model, p, max_new_tokens=8)
        gate = threading.Event()
        slow = engine.submit(Request(p, max_new_tokens=40, on_token=lambda t: gate.wait(0.02)))
        slow.cancel()
        assert slow.done.wait(60) and slow.finish_reason == "cancelled" and len(slow.tokens) < 40
    finally:
        engine.stop()
    full = Engine(model, max_batch=1, max_queue=1)
    full.submit(Request([1, 2]))
    with pytest.raises(QueueFull):
        full.submit(Request([1, 2]))
    with pytest.raises(ValueError, match="model length"):
        full.submit(Request(list(range(1, 3000))))


def test_a_failing_consumer_ends_only_its_request(model):
    def broken(token):
        raise RuntimeError("client went away badly")

    p, q = prompts(2, seed=8)
    engine = Engine(model, max_batch=2, max_model_len=64)
    bad, good = engine.run([Request(p, max_new_tokens=6, on_token=broken), Request(q, max_new_tokens=6)])
    assert bad.finish_reason == "error" and "badly" in str(bad.error) and bad.done.is_set()
    assert good.tokens == alone(model, q, max_new_tokens=6) and engine.finished == {"error": 1, "length": 1}


def test_a_request_that_fails_its_prefill_does_not_fail_the_ones_admitted_with_it(model):
    from erniekit.data.images import ImageInputs

    p, q, r = prompts(3, seed=9)
    picture = ImageInputs(np.zeros((4, 12), np.float32), np.array([[1, 2, 2]]))  # a text model reads none
    engine = Engine(model, max_batch=3, max_model_len=64)
    a, bad, c = engine.run(
        [
            Request(p, max_new_tokens=5),
            Request(q, max_new_tokens=5, images=picture),
            Request(r, max_new_tokens=5),
        ]
    )
    assert bad.finish_reason == "error" and "reads no images" in str(bad.error)
    assert a.tokens == alone(model, p, max_new_tokens=5) and c.tokens == alone(model, r, max_new_tokens=5)
