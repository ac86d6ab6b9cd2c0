"""The web UI's HTTP side (FastAPI, the stack ``erniekit serve`` runs on): the page, a JSON API over the
CLI's verbs, and the chat model behind ``erniekit serve``'s own OpenAI-compatible app.

    GET  /                      the page (static files installed with the package: nothing from a CDN)
    GET  /api/recipes           shipped recipes and the recipe files under the start directory
    POST /api/recipe            {recipe, overrides} -> the form, or the CLI's error line and its key
    POST /api/plan              {recipe, overrides} -> erniekit plan's report
    POST /api/train             {recipe, overrides, nproc} -> a job running erniekit train
    GET  /api/runs              runs under the start directory (from the web UI or the CLI), with status
    GET  /api/run?dir=&since=   one run: progress, new metrics records, checkpoints, exports, its job's log
    POST /api/run/stop|resume   {dir}: the Ctrl-C path / erniekit train ... train.resume=auto
    POST /api/eval, /api/export the CLI's eval and export verbs as jobs
    GET  /api/jobs, /api/job    jobs and one job's log and results (scores, completions, files written)
    GET  /api/models            what chat, eval and export can load: checkpoints, exports, model dirs
    POST /api/chat/load         {model, adapters} -> loads it behind serve's engine
    POST /api/upload?name=      an image for a VL chat (the raw file as the body)
    *    /chat/v1/...           erniekit serve's API for the loaded model (streaming chat completions)

Every path the page sends must lie under the start directory unless the server was told otherwise; when
it listens beyond this machine, every request needs the token it printed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets
import threading
import time
import uuid
from pathlib import Path

from fastapi import Request

from erniekit.errors import ErniekitError
from erniekit.trainer.rundir import checkpoint_step, checkpoints
from erniekit.webui import forms, runs
from erniekit.webui.jobs import Job, Jobs

log = logging.getLogger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


class WebError(Exception):
    def __init__(self, status: int, message: str, key: str | None = None):
        super().__init__(message)
        self.status, self.message, self.key = status, message, key


class ChatSlot:
    """The model the Chat tab talks to: serve's Server and app, swapped when the page loads another."""

    def __init__(self, uploads: Path, root: Path):
        self.app = self.server = None
        self.model = None
        self.adapters: list[str] = []
        self.lock = threading.Lock()
        self.uploads, self.root = uploads, root

    def load(self, model: str, adapters: list[str]) -> dict:
        from erniekit.serve import build_server
        from erniekit.serve.app import build_app

        with self.lock:
            self.close()
            named = [f"adapter{i + 1}={a}" for i, a in enumerate(adapters)]
            server = build_server(
                model, max_batch=4, allow_images=[str(self.uploads), str(self.root)], adapters=named
            )
            server.engine.start()
            self.server, self.app, self.model, self.adapters = server, build_app(server), model, adapters
            return self.describe()

    def shown(self, path: str) -> str:
        """A path as the page names it: relative to the start directory when under it."""
        resolved = Path(path).resolve()
        return resolved.relative_to(self.root).as_posix() if resolved.is_relative_to(self.root) else path

    def describe(self) -> dict:
        if self.server is None:
            return {"loaded": False}
        named = zip(self.server.adapter_names, self.adapters)
        return {
            "loaded": True,
            "model": self.shown(self.model),
            "name": self.server.model_name,
            "adapters": [{"name": n, "path": self.shown(p)} for n, p in named],
            "vision": self.server.processor is not None,
        }

    def close(self) -> None:
        if self.server is not None:
            self.server.engine.stop(drain=False)
        self.app = self.server = self.model = None

    async def __call__(self, scope, receive, send):  # the ASGI app mounted at /chat
        from fastapi.responses import JSONResponse

        if self.app is None:
            body = {"error": {"message": "no model is loaded: pick one in the Chat tab", "type": "no_model"}}
            await JSONResponse(body, status_code=409)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class WebUI:
    """State behind the routes: the start directory, the jobs and the chat slot."""

    def __init__(
        self, root: Path, state_dir: Path | None = None, any_path: bool = False, token: str | None = None
    ):
        self.root = Path(root).resolve()
        self.state = Path(state_dir or self.root / ".erniekit" / "webui").resolve()
        self.any_path, self.token = any_path, token
        self.jobs = Jobs(self.state)
        (self.state / "uploads").mkdir(parents=True, exist_ok=True)
        self.chat = ChatSlot(self.state / "uploads", self.root)
        self.shipped = {r["name"] for r in forms.shipped_recipes()}  # (they do not change while we run)

    # --- paths ---------------------------------------------------------------------------------------
    def inside(self, given: str, what: str) -> Path:
        """``given`` (relative to the start directory, or absolute) if the page may use it."""
        if not isinstance(given, str) or not given.strip():
            raise WebError(400, f"{what}: give a path", what)
        path = (self.root / given).resolve()
        if not self.any_path and not path.is_relative_to(self.root):
            raise WebError(
                403,
                f"{what}: {given} is outside {self.root}, the directory the web UI was started in "
                "(start it with --any-path to allow other places)",
                what,
            )
        return path

    def data_file(self, given: str, what: str) -> str:
        """A data file for the CLI: a bundled ``samples://`` name as it is, else a path the page may use."""
        from erniekit.resources import SAMPLES_SCHEME

        if isinstance(given, str) and given.startswith(SAMPLES_SCHEME):
            return given
        return self.rel(self.inside(given, what))

    def rel(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def recipe(self, name: str) -> str:
        """A shipped recipe's name, or a recipe file the page may read."""
        from erniekit.config.load import find_recipe

        if not isinstance(name, str) or not name:
            raise WebError(400, "recipe: pick a recipe", "recipe")
        if name in self.shipped and not (self.root / name).is_file():
            return name
        path = self.inside(name, "recipe")
        if find_recipe(path) is None:
            raise WebError(404, f"recipe: {name}: no such file", "recipe")
        return self.rel(path)

    def here(self, name: str) -> str:
        """What the server's own process loads for a name the page uses (the jobs run in the start
        directory; the server process need not)."""
        return str(self.root / name) if (self.root / name).exists() else name

    # --- runs ------------------------------------------------------------------------------------------
    def run_summary(self, run: Path, job: Job | None, since: int | None = None) -> dict:
        """A run as the list shows it, with ``job`` the newest job that wrote it (None: a CLI run); with
        ``since`` (a metrics.jsonl offset), also its new records, checkpoints, exports and log."""
        status = job.status() if job else {"state": "cli"}
        done = checkpoints(run)
        out = {
            "dir": self.rel(run),
            "status": status["state"],
            "progress": runs.progress(run),
            "checkpoints": len(done),
            "updated": runs.updated(run),
            "job": job.id if job else None,
        }
        if since is None:
            return out
        return {
            **out,
            "metrics": runs.metrics_since(run, since),
            "checkpoint_list": [{"path": self.rel(c), "step": checkpoint_step(c)} for c in done],
            "models": [self.rel(p) for p in runs.model_dirs(run)],
            "log": job.log_tail() if job else "",
            "command": job.command if job else None,
            "error": status.get("error"),
        }

    def run_detail(self, rel: str, since: int) -> dict:
        run = self.inside(rel, "dir")
        return self.run_summary(run, self.jobs.for_run(self.rel(run)), since)

    def start_train(self, recipe: str, overrides: list[str], nproc: int) -> dict:
        recipe = self.recipe(recipe)
        checked = forms.check(self.here(recipe), overrides)
        if not checked["ok"]:
            raise WebError(400, checked["error"], checked["key"])
        if nproc > 1 and checked["world"] != nproc:
            raise WebError(
                400,
                f"error: parallel: dp x sharding.degree x tp x pp = {checked['world']}, but --nproc "
                f"{nproc} processes were asked for",
                "nproc",
            )
        run = self.inside(checked["output_dir"], "train.output_dir")
        rel = self.rel(run)
        running = self.jobs.for_run(rel)
        if running is not None and running.running():
            raise WebError(
                409, f"{rel} is being written by a run that has not ended; stop it first", "train.output_dir"
            )
        argv = ["train", recipe, *overrides] + (
            ["--nproc", str(nproc), "--log-dir", "{job}/ranks"] if nproc > 1 else []
        )
        return self.jobs.start("train", argv, self.root, run_dir=rel, title=recipe).describe()

    def resume(self, rel: str) -> dict:
        run = self.inside(rel, "dir")
        rel = self.rel(run)
        job = self.jobs.for_run(rel)
        if job is not None and job.running():
            raise WebError(409, f"{rel} is still running", "dir")
        if job is not None:
            argv = [a for a in job.argv if not a.startswith("train.resume=")]
        elif (run / "config.yaml").is_file():  # a CLI run: its resolved recipe
            argv = ["train", self.rel(run / "config.yaml"), f"train.output_dir={rel}"]
        else:
            raise WebError(400, f"{rel}: no config.yaml to resume from", "dir")
        split = argv.index("--nproc") if "--nproc" in argv else len(argv)
        argv = [*argv[:split], "train.resume=auto", *argv[split:]]
        return self.jobs.start("train", argv, self.root, run_dir=rel, title=f"resume {rel}").describe()

    def models(self) -> list[dict]:
        """Everything chat, eval and export can load, newest runs first."""
        out = []
        for run in runs.find_runs(self.root):
            rel = self.rel(run)
            done = checkpoints(run)
            if done:
                newest = f"{rel} (newest checkpoint, step {checkpoint_step(done[-1])})"
                out.append({"path": rel, "label": newest, "kind": "run"})
            out += [{"path": self.rel(c), "label": self.rel(c), "kind": "checkpoint"} for c in reversed(done)]
            out += [
                {"path": self.rel(p), "label": self.rel(p), "kind": "export"} for p in runs.model_dirs(run)
            ]
        return out


def build_app(ui: WebUI):
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        ui.chat.close()  # the engine's thread ends with the server

    app = FastAPI(title="erniekit webui", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)

    @app.exception_handler(WebError)
    async def web_error(request, e: WebError):
        return JSONResponse({"error": e.message, "key": e.key}, status_code=e.status)

    @app.exception_handler(ErniekitError)
    async def erniekit_error(request, e: ErniekitError):
        return JSONResponse({"error": f"error: {e}", "key": getattr(e, "key", None)}, status_code=400)

    @app.exception_handler(Exception)
    async def any_error(request, e: Exception):
        log.exception("request failed")
        return JSONResponse({"error": f"internal error: {e}"}, status_code=500)

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if ui.token is None:
            return await call_next(request)
        given = request.query_params.get("token")
        header = request.headers.get("authorization", "")
        ok = secrets.compare_digest(
            (given or request.cookies.get("erniekit_webui") or header.removeprefix("Bearer ")).encode(),
            ui.token.encode(),
        )
        if not ok:
            return JSONResponse(
                {"error": "this web UI needs its token: open the address it printed (?token=...)"}, 401
            )
        response = await call_next(request)
        if given:
            response.set_cookie("erniekit_webui", ui.token, httponly=True, samesite="strict")
        return response

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise WebError(400, "the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise WebError(400, "the request body must be a JSON object")
        return data

    def overrides(data: dict) -> list[str]:
        given = data.get("overrides", [])
        if not isinstance(given, list) or not all(isinstance(o, str) for o in given):
            raise WebError(400, "overrides must be a list of KEY=VALUE strings", "overrides")
        return given

    @app.get("/")
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/chat", ui.chat)

    @app.get("/api/info")
    async def info():
        from erniekit import __version__

        return {"version": __version__, "root": str(ui.root), "any_path": ui.any_path}

    @app.get("/api/recipes")
    async def recipes():
        return {"shipped": forms.shipped_recipes(), "local": forms.local_recipes(ui.root)}

    @app.post("/api/recipe")
    async def recipe(request: Request):
        data = await body(request)
        name = ui.recipe(data.get("recipe"))
        return {"recipe": name, **await run_in_threadpool(forms.check, ui.here(name), overrides(data))}

    @app.post("/api/plan")
    async def plan(request: Request):
        data = await body(request)
        name = ui.recipe(data.get("recipe"))
        return {"text": await run_in_threadpool(forms.plan_text, ui.here(name), overrides(data))}

    @app.post("/api/train")
    async def train(request: Request):
        data = await body(request)
        nproc = data.get("nproc", 1)
        if not isinstance(nproc, int) or nproc < 1:
            raise WebError(400, "nproc must be a whole number of processes, 1 or more", "nproc")
        return await run_in_threadpool(ui.start_train, data.get("recipe"), overrides(data), nproc)

    @app.get("/api/runs")
    async def run_list():
        writers = ui.jobs.newest_by_run()
        return {"runs": [ui.run_summary(r, writers.get(ui.rel(r))) for r in runs.find_runs(ui.root)]}

    @app.get("/api/run")
    async def run(dir: str, since: int = 0):
        return ui.run_detail(dir, since)

    @app.post("/api/run/stop")
    async def stop(request: Request):
        rel = ui.rel(ui.inside((await body(request)).get("dir"), "dir"))
        job = ui.jobs.for_run(rel)
        if job is None or not job.stop():
            raise WebError(409, f"{rel} has no running job started here to stop", "dir")
        return job.describe()

    @app.post("/api/run/resume")
    async def resume(request: Request):
        return ui.resume((await body(request)).get("dir"))

    @app.post("/api/eval")
    async def evaluate(request: Request):
        data = await body(request)
        target = data.get("target")
        if target in ui.shipped or str(target).endswith((".yaml", ".yml")):
            target = ui.recipe(target)
        else:
            target = ui.rel(ui.inside(target, "target"))
        argv = ["eval", target, *overrides(data)]
        for flag in ("data", "generation"):
            for path in data.get(flag) or []:
                argv += [f"--{flag}", ui.data_file(path, flag)]
        argv += ["--out", "{job}/results.json"]
        return ui.jobs.start("eval", argv, ui.root, title=target).describe()

    @app.post("/api/export")
    async def export(request: Request):
        data = await body(request)
        source = ui.rel(ui.inside(data.get("run"), "run"))
        out = ui.rel(ui.inside(data.get("out"), "out"))
        to = data.get("to", "hf")
        if to not in ("hf", "paddle", "gguf", "ollama", "paddle-inference"):
            raise WebError(400, f"to: {to!r} is not one of hf, paddle, gguf, ollama, paddle-inference", "to")
        argv = ["export", source, "--out", out, "--to", to]
        if data.get("dtype"):
            argv += ["--dtype", str(data["dtype"])]
        if data.get("merge_lora"):
            argv.append("--merge-lora")
        return ui.jobs.start("export", argv, ui.root, run_dir=out, title=f"{source} -> {out}").describe()

    @app.get("/api/jobs")
    async def job_list(kind: str | None = None):
        return {"jobs": [j.describe() for j in ui.jobs.all() if kind is None or j.kind == kind]}

    @app.get("/api/job")
    async def job(id: str):
        found = ui.jobs.get(id)
        if found is None:
            raise WebError(404, f"no job {id}", "id")
        out = {**found.describe(), "log": found.log_tail()}
        results = found.dir / "results.json"
        if found.kind == "eval" and results.is_file():
            out["results"] = json.loads(results.read_text())
        if found.kind == "export" and found.run_dir and found.status()["state"] == "finished":
            out["files"] = runs.files(ui.root / found.run_dir)
        return out

    @app.post("/api/job/stop")
    async def job_stop(request: Request):
        found = ui.jobs.get(str((await body(request)).get("id")))
        if found is None or not found.stop():
            raise WebError(409, "that job is not running", "id")
        return found.describe()

    @app.get("/api/models")
    async def models():
        return {"models": ui.models(), "chat": ui.chat.describe()}

    @app.post("/api/chat/load")
    async def chat_load(request: Request):
        data = await body(request)
        model = ui.rel(ui.inside(data.get("model"), "model"))
        adapters = [ui.rel(ui.inside(a, "adapters")) for a in data.get("adapters") or []]
        start = time.perf_counter()
        described = await run_in_threadpool(ui.chat.load, ui.here(model), [ui.here(a) for a in adapters])
        return {**described, "seconds": round(time.perf_counter() - start, 2)}

    @app.post("/api/upload")
    async def upload(request: Request, name: str):
        suffix = Path(name).suffix.lower()
        if suffix not in IMAGE_TYPES:
            raise WebError(
                400, f"{name}: not an image this UI takes ({', '.join(sorted(IMAGE_TYPES))})", "name"
            )
        data = await request.body()
        if len(data) > 32 << 20:
            raise WebError(413, f"{name}: larger than 32 MB", "name")
        try:
            from PIL import Image

            Image.open(io.BytesIO(data)).verify()
        except Exception as e:  # refused now, not when the model reads it
            raise WebError(400, f"{name}: not a readable image ({e})", "name") from None
        path = ui.state / "uploads" / f"{uuid.uuid4().hex[:12]}{suffix}"
        path.write_bytes(data)
        return {"path": str(path)}

    return app
