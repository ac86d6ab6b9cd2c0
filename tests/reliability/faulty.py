"""Run the erniekit CLI with one injected fault, as a real process that really dies or really fails to write.

    python tests/reliability/faulty.py FAULT [erniekit arguments ...]

FAULT (``@R`` limits it to the process of rank R under paddle.distributed.launch):
  kill-after-step:N[@R]  SIGKILL right after optimizer step N, before its metrics line and checkpoint
  kill-in-save:N         SIGKILL halfway through writing checkpoint-N (model file written, optimizer
                         file half written, no trainer state yet)
  disk-full-after:N      once checkpoint-N is saved, no file may grow past 64 KiB (RLIMIT_FSIZE: writes
                         fail with EFBIG, as on a full disk); metrics lines still fit
  disk-full              no file may grow past 1 KiB from the start
Only the trigger is injected; everything else is the real CLI.
"""

from __future__ import annotations

import os
import resource
import signal
import sys


def _limit_file_size(nbytes: int) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, resource.RLIM_INFINITY))


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(fault: str) -> None:
    kind, _, arg = fault.partition(":")
    arg, _, rank = arg.partition("@")
    if rank and os.environ.get("PADDLE_TRAINER_ID", "0") != rank:
        return
    step = int(arg) if arg else 0
    from erniekit.trainer import checkpoint as ckpt
    from erniekit.trainer import loop

    if kind == "kill-after-step":
        real_step = loop.Trainer.train_step

        def train_step(self):
            record = real_step(self)
            if self.state.step == step:
                _die()
            return record

        loop.Trainer.train_step = train_step
    elif kind == "kill-in-save":
        real_write = ckpt._write_tensors

        def write_tensors(arrays, path):
            if path.parent.name == f"checkpoint-{step}.partial" and path.name == "optimizer.safetensors":
                real_write(arrays, path)
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                _die()
            real_write(arrays, path)

        ckpt._write_tensors = write_tensors
    elif kind == "disk-full-after":
        real_save = ckpt.save_checkpoint

        def save_checkpoint(output_dir, at, *args, **kwargs):
            path = real_save(output_dir, at, *args, **kwargs)
            if at == step:
                _limit_file_size(64 * 1024)
            return path

        ckpt.save_checkpoint = save_checkpoint
    elif kind == "disk-full":
        _limit_file_size(1024)
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def main() -> int:
    fault, argv = sys.argv[1], sys.argv[2:]
    from erniekit.runtime import setup_runtime

    setup_runtime()
    install(fault)
    from erniekit.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
