"""Process-level runtime settings that must be decided before Paddle is imported.

Three facts about Paddle 3.3 on CPU make this necessary (shared/notes/paddle-cpu-lab.md §8):

* ``import paddle`` sets ``OMP_NUM_THREADS=1`` when it is unset, so Paddle silently runs on one core.
* On AMD CPUs, Paddle's bundled MKL takes a slow generic sgemm path, and after the first Adam step every
  later GEMM becomes ~3.8x slower. ``MKL_DEBUG_CPU_TYPE=5`` (read when MKL loads) fixes both.
* Paddle's CPU allocator takes every tensor from glibc ``malloc`` and frees it back, and glibc serves
  large blocks with fresh ``mmap`` pages: each big temporary (a [512, 49152] logits block is 100 MB) pays
  its page faults again, which made elementwise ops 3-5x slower than their arithmetic. Raising glibc's
  mmap and trim thresholds (``mallopt``; ``ERNIEKIT_MALLOC=system`` keeps glibc's defaults) lets freed
  blocks be reused. The price is that RSS stays near its peak instead of shrinking between steps.

Entry points (the CLI, the test suite, benchmarks) call :func:`configure_cpu_runtime` first thing. Values
already present in the environment are respected, so every setting stays overridable; what was chosen is
returned (and logged by the CLI) so a run's log says which settings it had.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import os
import sys
import warnings
from dataclasses import dataclass


@dataclass(frozen=True)
class RuntimeSettings:
    omp_num_threads: str
    mkl_debug_cpu_type: str | None
    user_set: tuple[str, ...]
    malloc_reuse: bool = False

    def describe(self) -> str:
        mkl = self.mkl_debug_cpu_type or "unset"
        origin = f" (from environment: {', '.join(self.user_set)})" if self.user_set else ""
        malloc = ", malloc: reuse freed blocks" if self.malloc_reuse else ", malloc: system default"
        return f"threads: OMP_NUM_THREADS={self.omp_num_threads}, MKL_DEBUG_CPU_TYPE={mkl}{origin}{malloc}"


def _cpu_vendor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def configure_cpu_runtime() -> RuntimeSettings:
    """Set thread and MKL environment variables (unless already set) before Paddle loads."""
    if "paddle" in sys.modules:
        warnings.warn(
            "configure_cpu_runtime() called after paddle was imported; thread and MKL settings "
            "cannot take effect any more",
            RuntimeWarning,
            stacklevel=2,
        )
    user_set = tuple(k for k in ("OMP_NUM_THREADS", "MKL_DEBUG_CPU_TYPE") if k in os.environ)
    os.environ.setdefault("OMP_NUM_THREADS", str(_usable_cores()))
    if _cpu_vendor() == "AuthenticAMD":
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    return RuntimeSettings(
        omp_num_threads=os.environ["OMP_NUM_THREADS"],
        mkl_debug_cpu_type=os.environ.get("MKL_DEBUG_CPU_TYPE"),
        user_set=user_set,
    )


_PADDLE_IMPORT_NOISE = (
    "WARNING: OMP_NUM_THREADS set to",
    "PLEASE USE OMP_NUM_THREADS WISELY",
)


def import_paddle_quietly():
    """Import paddle, dropping the two banners it prints unconditionally on every import.

    Paddle warns whenever ``OMP_NUM_THREADS > 1`` (which we set on purpose) and whenever ``ccache`` is
    missing. Everything else it prints while importing is passed through unchanged.
    """
    if "paddle" in sys.modules:
        return sys.modules["paddle"]
    captured = io.StringIO()
    real_stderr = sys.stderr
    sys.stderr = captured
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No ccache found")
            import paddle
    finally:
        sys.stderr = real_stderr
    for line in captured.getvalue().splitlines():
        if not line.startswith(_PADDLE_IMPORT_NOISE):
            print(line, file=sys.stderr)
    return paddle


def keep_freed_memory() -> bool:
    """glibc: serve large blocks from the heap and keep freed memory for reuse (see the module doc)."""
    if os.environ.get("ERNIEKIT_MALLOC", "reuse") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl, ...): leave the allocator alone
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30))


def setup_runtime() -> RuntimeSettings:
    """What every entry point runs first: thread/MKL/allocator settings, then a quiet ``import paddle``."""
    settings = configure_cpu_runtime()
    settings = dataclasses.replace(settings, malloc_reuse=keep_freed_memory())
    import_paddle_quietly()
    return settings
