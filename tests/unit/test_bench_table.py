"""The benchmark verdict rule (a win needs non-overlapping ranges) and the README table rendered from a
results file."""

import pytest

from benchmarks.common import summarize, timed_steps
from benchmarks.table import LOSS, TIE, WIN, compare, render, replace_block, verdict


def test_verdict_needs_ranges_apart():
    assert verdict((11.0, 12.0), (9.0, 10.0)) == WIN
    assert verdict((9.0, 10.0), (11.0, 12.0)) == LOSS
    # a higher median inside overlapping ranges is not a win (nor touching ranges)
    assert verdict((9.5, 13.0), (9.0, 10.0)) == TIE
    assert verdict((10.0, 12.0), (9.0, 10.0)) == TIE
    assert verdict((8.0, 9.5), (9.0, 10.0)) == TIE


def row(side, speeds, rss):
    runs = [
        {"tokens_per_sec": s, "peak_rss_MB": rss, "warmup_s": 2.0, "steps_per_sec": s / 512} for s in speeds
    ]
    return {"suite": "sft", "row": f"full SFT ({side})", "side": side, **summarize(runs)}


def payload(ours, peer):
    ours["vs"] = [compare(ours, peer)]
    return {
        "date": "2026-01-01",
        "repeats": 3,
        "machine": {
            "cpu": "Test CPU",
            "cpu_family": "25",
            "cpu_model": "1",
            "cores": 2,
            "flags": {"avx2": True, "avx512_bf16": False},
            "env": {"OMP_NUM_THREADS": "2"},
            "paddle": "3.3.1",
            "gemm_gflops_per_sec": {
                "paddle fp32": {"gflops_per_sec": 139.0, "n": 2048},
                "torch bf16": {"gflops_per_sec": 0.3, "n": 512},
            },
        },
        "rows": [
            {
                "suite": "gemm",
                "row": "paddle.matmul",
                "side": "paddle fp32",
                **summarize([{"gflops_per_sec": g} for g in (137.0, 139.0, 140.0)]),
            },
            ours,
            peer,
            {"suite": "sft", "row": "full SFT (bf16)", "side": "torch bf16", "skipped": "no AVX-512-BF16"},
        ],
    }


def test_table_from_results():
    ours, peer = row("erniekit", [90.0, 100.0, 95.0], 4000.0), row("torch", [80.0, 85.0, 70.0], 3200.0)
    assert (ours["tokens_per_sec"], ours["tokens_per_sec_min"], ours["tokens_per_sec_max"]) == (
        95.0,
        90.0,
        100.0,
    )
    text = render(payload(ours, peer))
    lines = text.splitlines()
    assert "Test CPU (family 25, model 1), 2 cores; avx2 yes, avx512_bf16 no; OMP_NUM_THREADS=2" in lines[0]
    assert "paddle fp32 139, torch bf16 0.3 (n=512)" in lines[0]
    ours_line = next(line for line in lines if "(erniekit)" in line)
    assert "| 95 (90-100) |" in ours_line
    assert "| 1.19 vs torch | win | 1.25 |" in ours_line
    assert "| 139 (137-140) |" in next(line for line in lines if line.startswith("| gemm"))
    assert "skipped: no AVX-512-BF16" in lines[-1]


def test_overlapping_repeats_are_a_tie_in_the_table():
    ours, peer = row("erniekit", [84.0, 100.0, 95.0], 4000.0), row("torch", [80.0, 85.0, 70.0], 3200.0)
    ours_line = next(line for line in render(payload(ours, peer)).splitlines() if "(erniekit)" in line)
    assert f"| {TIE} |" in ours_line and "| win |" not in ours_line


def test_readme_block_is_replaced_between_markers():
    text = "intro\n<!-- bench:run -->\nold table\n<!-- /bench:run -->\nprose after\n"
    assert replace_block(text, "new") == "intro\n<!-- bench:run -->\nnew\n<!-- /bench:run -->\nprose after\n"
    with pytest.raises(SystemExit):
        replace_block("no markers", "new")


def test_timed_steps_keeps_warmup_apart():
    speed = timed_steps([10.0, 2.0, 2.0, 4.0], [100, 100, 100, 100])
    assert speed["warmup_s"] == 10.0 and speed["measured_steps"] == 3
    assert speed["tokens_per_sec"] == pytest.approx(300 / 8)
    with pytest.raises(SystemExit):
        timed_steps([10.0, 2.0, 2.0], [100, 100, 100])
