"""What the web UI starts: ordinary ``erniekit`` commands in their own sessions, which outlive the page and
the server.

Each job is a directory under the state directory (``<root>/.erniekit/webui/jobs/<id>/``)::

    job.json     what runs: kind (train, eval, export), argv, working directory, the run it writes
    output.log   its stdout and stderr
    pid.json     the command's process id and start time, written by the watcher
    exit.json    its exit code and end time, written by the watcher when the command ends

The watcher (``python -m erniekit.webui.jobs JOBDIR``) starts the command, records its pid and waits for
it, so the exit code is known even when the server that started the job is gone: a restarted server
reads the directories back and re-attaches. Stopping sends the command SIGINT, the Ctrl-C path: a
training run finishes its step, saves a checkpoint and exits 130.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STOPPED_CODES = {130, 143}  # Ctrl-C, SIGTERM: what erniekit train exits with once it has saved


@dataclass
class Job:
    dir: Path
    kind: str
    argv: list[str]
    cwd: str
    started: float
    run_dir: str | None = None  # train: the run's output_dir; export: the directory written
    title: str = ""

    @property
    def id(self) -> str:
        return self.dir.name

    def _read(self, name: str) -> dict | None:
        try:
            return json.loads((self.dir / name).read_text())
        except (OSError, ValueError):
            return None

    def status(self) -> dict:
        """``starting``, ``running``, ``stopping``, ``finished``, ``stopped``, ``failed`` or ``lost`` (the
        watcher died without writing an exit code), with the exit code and the error line if any."""
        end = self._read("exit.json")
        if end is not None:
            code = end["code"]
            state = "finished" if code == 0 else "stopped" if code in STOPPED_CODES else "failed"
            error = self.error_line() if state == "failed" else None  # (read from the log only then)
            return {"state": state, "code": code, "ended": end["time"], "error": error}
        pid = self._read("pid.json")
        if pid is None:
            alive = time.time() - self.started < 30  # the watcher has not written it yet
            return {"state": "starting" if alive else "lost"}
        if not _alive(pid["pid"], pid.get("ticks")):
            return {"state": "lost", "error": self.error_line()}
        return {"state": "stopping" if (self.dir / "stop").exists() else "running", "pid": pid["pid"]}

    def running(self) -> bool:
        return self.status()["state"] in ("starting", "running", "stopping")

    def stop(self) -> bool:
        """SIGINT to the command (a second one quits without saving, as a second Ctrl-C does)."""
        pid = self._read("pid.json")
        if pid is None or not _alive(pid["pid"], pid.get("ticks")):
            return False
        (self.dir / "stop").touch()
        os.kill(pid["pid"], signal.SIGINT)
        return True

    def log_tail(self, lines: int = 60) -> str:
        try:
            with open(self.dir / "output.log", "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 200 * lines))
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])

    def error_line(self) -> str | None:
        """The command's one-line ``error: ...`` (the CLI's message for bad input), if it printed one."""
        found = [line for line in self.log_tail(200).splitlines() if line.startswith("error: ")]
        return found[-1] if found else None

    @property
    def command(self) -> str:
        return " ".join(["erniekit", *self.argv])

    def describe(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "command": self.command,
            "started": self.started,
            "run_dir": self.run_dir,
            **self.status(),
        }


class Jobs:
    """The jobs under ``state_dir``; ``start`` launches one, the rest read them back from disk."""

    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir) / "jobs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._watchers: list[subprocess.Popen] = []

    def start(
        self, kind: str, argv: list[str], cwd: Path, run_dir: str | None = None, title: str = ""
    ) -> Job:
        """Launch ``erniekit ARGV`` in ``cwd``; ``{job}`` in an argument becomes the job's directory."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        n = 0
        while (self.dir / f"{stamp}-{kind}-{n}").exists():
            n += 1
        where = self.dir / f"{stamp}-{kind}-{n}"
        argv = [a.replace("{job}", str(where)) for a in argv]
        job = Job(where, kind, argv, str(cwd), time.time(), run_dir, title)
        job.dir.mkdir()
        record = {k: getattr(job, k) for k in ("kind", "argv", "cwd", "started", "run_dir", "title")}
        (job.dir / "job.json").write_text(json.dumps(record, indent=1))
        # its own session: a Ctrl-C to the web server (or the server's exit) does not reach the job
        watcher = subprocess.Popen(
            [sys.executable, "-m", "erniekit.webui.jobs", str(job.dir)],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._watchers = [w for w in self._watchers if w.poll() is None] + [watcher]  # reap ended ones
        return job

    def all(self) -> list[Job]:
        """Newest first."""
        found = (self._read(d) for d in sorted(self.dir.iterdir(), reverse=True))
        return [j for j in found if j is not None]

    def get(self, job_id: str) -> Job | None:
        return self._read(self.dir / job_id) if job_id and "/" not in job_id and job_id != ".." else None

    def for_run(self, run_dir: str) -> Job | None:
        """The newest train job writing ``run_dir``."""
        return self.newest_by_run().get(run_dir)

    def newest_by_run(self) -> dict[str, Job]:
        """Each run directory's newest train job, from one pass over the jobs."""
        newest: dict[str, Job] = {}
        for j in self.all():
            if j.kind == "train" and j.run_dir is not None:
                newest.setdefault(j.run_dir, j)
        return newest

    @staticmethod
    def _read(d: Path) -> Job | None:
        try:
            record = json.loads((d / "job.json").read_text())
        except (OSError, ValueError):
            return None
        return Job(d, **record)


def _ticks(pid: int) -> int | None:
    """The process's start time in clock ticks (Linux), so a reused pid is not taken for the job."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, ticks: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    now = _ticks(pid)
    return ticks is None or now is None or now == ticks


def watch(job_dir: Path) -> int:
    """Run the job's command with its output in output.log; record its pid, then its exit code."""
    record = json.loads((job_dir / "job.json").read_text())
    with open(job_dir / "output.log", "ab") as log:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child = subprocess.Popen(
            [sys.executable, "-m", "erniekit", *record["argv"]],
            cwd=record["cwd"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # (after the start: the command keeps the default)
        (job_dir / "pid.json").write_text(json.dumps({"pid": child.pid, "ticks": _ticks(child.pid)}))
        code = child.wait()
    code = 128 - code if code < 0 else code  # killed by a signal: the shell's convention
    tmp = job_dir / ".exit.json.tmp"
    tmp.write_text(json.dumps({"code": code, "time": time.time()}))
    os.replace(tmp, job_dir / "exit.json")
    return code


if __name__ == "__main__":
    raise SystemExit(watch(Path(sys.argv[1])))
