"""The web server: ``python run.py --ui [--host H] [--port P] [--output DIR] [--datasets DIR] [--token T]``.

``create_app`` builds the FastAPI app (pages and JSON endpoints from ``ui.routes_*``) and, at startup, the
worker process that runs the queue; ``main`` serves it with uvicorn on 127.0.0.1:8675 unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from toolkit.errors import EaselError
from ui.settings import TOKEN_COOKIE, TOKEN_ENV, Settings, choose_token, is_loopback

REPO = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


@dataclass
class UI:
    """What the routes share."""

    settings: Settings
    registry: Any
    store: Any
    templates: Any
    generator: Any
    worker: subprocess.Popen | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def page(self, request: Any, template: str, **context: Any) -> Any:
        return self.templates.TemplateResponse(request, template, {"settings": self.settings, **context})


def start_worker(settings: Settings) -> subprocess.Popen:
    """The queue's worker process, in its own session (Ctrl-C in the UI's terminal reaches only the UI)."""
    settings.state.mkdir(parents=True, exist_ok=True)
    log = (settings.state / "worker.log").open("ab")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-m", "ui.worker", "--state", str(settings.state), "--root", str(settings.root),
                             "--parent", str(os.getpid())], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def stop_worker(process: subprocess.Popen | None, timeout: float = 150) -> None:
    """Ask the worker to stop (its jobs save and go back to the queue) and wait for it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _auth_middleware(settings: Settings) -> Any:
    """401 for every request without the token (when there is one): a header, a cookie, or ``?token=`` once."""
    from fastapi.responses import PlainTextResponse, RedirectResponse

    async def check(request: Any, call_next: Any) -> Any:
        if settings.token is None:
            return await call_next(request)
        given = request.query_params.get("token")
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header.lower().startswith("bearer ") else None
        if settings.token_ok(bearer) or settings.token_ok(request.cookies.get(TOKEN_COOKIE)):
            return await call_next(request)
        if given is not None and settings.token_ok(given):
            response = RedirectResponse(str(request.url.remove_query_params("token")), status_code=303)
            response.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
            return response
        return PlainTextResponse(f"401: this easel UI needs its token: open the address printed at its start "
                                 f"(…/?token=...), or send 'Authorization: Bearer TOKEN' (${TOKEN_ENV}).", status_code=401)

    return check


def create_app(settings: Settings, *, registry: Any = None, run_worker: bool = True) -> Any:
    """The app; ``run_worker``: start the queue's worker process with the app (and stop it with the app)."""
    from fastapi import FastAPI
    from fastapi.staticfiles import StaticFiles
    from fastapi.templating import Jinja2Templates

    from toolkit.registry import Registry
    from ui import routes_data, routes_generate, routes_jobs
    from ui.generator import Generator
    from ui.store import Store

    registry = registry or Registry.discover(("jobs",), REPO / "extensions")
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    ui = UI(settings, registry, Store(settings.state), templates, Generator(settings.state, settings.root))

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        ui.worker = start_worker(settings) if run_worker else None
        try:
            yield
        finally:
            ui.generator.close()
            stop_worker(ui.worker)

    app = FastAPI(title="easel", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ui = ui
    app.middleware("http")(_auth_middleware(settings))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (routes_jobs, routes_data, routes_generate):
        app.include_router(module.router)
    return app


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python run.py --ui", description="easel's web UI (jobs, datasets, generation).")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; any other needs a token)")
    parser.add_argument("--port", type=int, default=8675)
    parser.add_argument("--output", type=Path, default=Path("output"), help="training runs, generated images, the queue")
    parser.add_argument("--datasets", type=Path, default=Path("datasets"), help="dataset folders (one per subfolder)")
    parser.add_argument("--token", help=f"the access token (default ${TOKEN_ENV}; made up and printed for a non-loopback bind)")
    parser.add_argument("--generate-device", default="auto", help="device of the generate worker (default auto)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from toolkit.log import log, setup_console

    args = parse_args(list(argv or []))
    setup_console()
    try:
        token, made_up = choose_token(args.host, args.token)
    except EaselError as err:
        log.error(f"error: {err}")
        return err.exit_code
    root = Path.cwd()
    settings = Settings(root=root, output=(root / args.output), datasets=(root / args.datasets), host=args.host,
                        port=args.port, token=token, generate_device=args.generate_device)
    settings.output.mkdir(parents=True, exist_ok=True)
    settings.datasets.mkdir(parents=True, exist_ok=True)
    address = f"http://{'127.0.0.1' if args.host == '0.0.0.0' else args.host}:{args.port}/"
    if token and made_up:
        log.info(f"easel UI: {address}?token={token}  (the token is required from other machines; set ${TOKEN_ENV} to choose it)")
    else:
        log.info(f"easel UI: {address}" + ("" if is_loopback(args.host) else "  (token from --token / $" + TOKEN_ENV + ")"))
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0
