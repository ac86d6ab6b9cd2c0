"""erniekit's own fused CPU kernels (csrc/cpu_kernels.cc): compiled once per machine, then loaded.

Paddle's CPU build runs RMSNorm, SwiGLU, rotary and the attention softmax as chains of small eager ops,
mostly single-threaded; each of these kernels is one multi-threaded pass with its backward beside it.
They are float32 only and eager only: other dtypes and static graphs (export) run the reference.

The first use compiles the file with ``paddle.utils.cpp_extension`` (g++ with OpenMP, tuned for this
CPU: ~30 s), into ``$ERNIEKIT_KERNEL_CACHE`` or ``~/.cache/erniekit/kernels/<hash>``, the hash covering
the source, Paddle's version and the CPU's flags; a file lock lets concurrent processes share one build.
The kernels link Paddle's own OpenMP runtime (libiomp5), so they share its threads with MKL's.
:func:`unavailable` says why they cannot be used (no compiler, a failed build), and ``ops._choose`` then
keeps the reference with one log line.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import paddle

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cc"
# tuned for the CPU it runs on (the cache key has its flags); branch-free math lets the loops vectorise
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
NAME = "erniekit_cpu_kernels"
_state: dict = {}


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def cache_dir() -> Path:
    key = hashlib.sha256(
        SOURCE.read_bytes() + paddle.__version__.encode() + _cpu_flags().encode() + str(FLAGS).encode()
    ).hexdigest()[:16]
    root = os.environ.get("ERNIEKIT_KERNEL_CACHE") or Path.home() / ".cache" / "erniekit" / "kernels"
    return Path(root) / key


def _build():
    """Compile the kernels unless this cache entry has them, then register them with Paddle.

    The source is copied into the entry and built from there, so every checkout and installed copy of the
    same source shares one build; a built entry loads without ``cpp_extension.load``, whose setup.py
    child process would cost every run a few seconds."""
    out = cache_dir()
    out.mkdir(parents=True, exist_ok=True)
    library = out / NAME / f"{NAME}.so"
    with open(out / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process builds; the others wait, then load its result
        if not library.exists():
            _compile(out)
        from paddle.utils.cpp_extension import load_op_meta_info_and_register_op

        return _bind(load_op_meta_info_and_register_op(str(library)))


def _compile(out: Path) -> None:
    """Build the library in a child process, its output in ``build.log``: cpp_extension prints every
    step, and it registers what it builds, which would leave this process's own registration empty."""
    libs = Path(paddle.__file__).parent / "libs"
    source = out / SOURCE.name
    shutil.copyfile(SOURCE, source)
    options = {
        "name": NAME,
        "sources": [str(source)],
        "extra_cxx_cflags": FLAGS,
        "extra_ldflags": [f"-L{libs}", "-l:libiomp5.so", f"-Wl,-rpath,{libs}"],
        "build_directory": str(out),
        "verbose": False,
    }
    code = "import json, sys; from paddle.utils.cpp_extension import load; load(**json.loads(sys.argv[1]))"
    log_path = out / "build.log"
    with open(log_path, "w") as f:
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(options)], stdout=f, stderr=subprocess.STDOUT, check=False
        )
    if proc.returncode:
        lines = log_path.read_text(errors="replace").splitlines()
        first = next((line for line in lines if "error" in line.lower()), f"exit status {proc.returncode}")
        raise RuntimeError(f"the build failed, see {log_path}: {first.strip()[:200]}")


def _bind(op_names: list[str]) -> types.SimpleNamespace:
    """One Python function per registered forward op (their backward ops are autograd's)."""
    from paddle import _C_ops

    def op(name: str):
        def run(*args):
            outs = _C_ops._run_custom_op(name, *args)
            return outs[0] if len(outs) == 1 else outs

        return run

    return types.SimpleNamespace(**{n: op(n) for n in op_names if not n.endswith("_grad")})


def module():
    """The compiled kernels (built on first use), or None when they cannot be built here."""
    if "module" not in _state:
        try:
            _state["module"], _state["error"] = _build(), None
        except Exception as e:  # no compiler, missing headers, a failed build: keep the reference
            _state["module"], _state["error"] = None, f"{type(e).__name__}: {str(e).strip()[:400]}"
            log.info("erniekit CPU kernels unavailable (%s)", _state["error"])
    return _state["module"]


def unavailable() -> str | None:
    """None when the kernels are built and loaded, else why not."""
    if os.environ.get("ERNIEKIT_CPU_KERNELS", "1") == "0":
        return "ERNIEKIT_CPU_KERNELS=0"
    return None if module() is not None else _state["error"]


def usable(*tensors: paddle.Tensor) -> bool:
    """Whether these inputs can take a kernel: eager mode and float32 everywhere."""
    return paddle.in_dynamic_mode() and all(t.dtype == paddle.float32 for t in tensors)


def contiguous(t: paddle.Tensor) -> paddle.Tensor:
    return t if t.is_contiguous() else t.contiguous()
