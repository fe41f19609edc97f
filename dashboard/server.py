"""The dashboard's HTTP server: one static page, a JSON endpoint, and Prometheus `/metrics`.

A Starlette app on uvicorn. The page draws with plotly.js served from the `plotly` wheel, so
nothing is fetched from the internet at run time. All data comes through DuckDB
(`jobs.serving.Lakehouse`), never Spark.

    GET /                 the page (static/index.html)
    GET /static/<file>    app.js, style.css, plotly.min.js
    GET /api/panels       every panel as JSON; ?minutes=&type=&severity=&location=&sensor=
    GET /metrics          Prometheus text format from gold/pipeline_metrics
    GET /healthz          "ok"

Hardening (dashboard/security.py): a Host-header allow-list, security headers on every
answer, gzip, validated parameters (a bad one is a 400 naming it), a generic 500 for any
server-side error, token authentication whenever a token is set (required off loopback), and
uvicorn with a deadline per request, a keep-alive timeout, a connection limit and h11's size
limit on a request's head.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import signal
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from dashboard import metrics, panels
from dashboard.security import (
    DashboardError,
    SecurityHeaders,
    TokenAuth,
    allowed_hosts,
    check_bind,
    hardened_protocol,
    is_loopback,
)
from gold.schema import ALERT_TYPES, SEVERITIES
from jobs.config import Config
from jobs.serving import Lakehouse

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"

MAX_MINUTES = 366 * 24 * 60  # a year; 0 means the whole table
KNOWN_TYPES = frozenset(ALERT_TYPES)
KNOWN_SEVERITIES = frozenset(SEVERITIES)
# Names as the generator and the replays write them ("Building A - Floor 1", "SENSOR_001",
# "Beijing - Aotizhongxin"): letters, digits, spaces and a few separators; no quotes,
# backslashes, semicolons, angle brackets or control characters.
_NAME = re.compile(r"[\w .,:/()#@+-]+")
MAX_LOCATION = 200
MAX_SENSOR = 128


@dataclass(frozen=True)
class ServerSettings:
    """How the dashboard listens. `token` None means no authentication (loopback only)."""

    host: str = "127.0.0.1"
    port: int = 8501
    refresh_s: float = 5.0
    token: str | None = field(default=None, repr=False)
    allow_hosts: tuple[str, ...] = ()
    request_timeout_s: float = 10.0  # the request line, headers and body must arrive by then
    keep_alive_s: int = 5  # an idle connection after a response
    max_connections: int = 256  # beyond it uvicorn answers 503
    max_head_bytes: int = 16 * 1024  # request line + headers; beyond them a 431

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise DashboardError(f"--port must be 0..65535, got {self.port}")
        if not 0.2 <= self.refresh_s <= 3600:
            raise DashboardError(f"--refresh must be 0.2..3600 seconds, got {self.refresh_s}")
        if not 0.5 <= self.request_timeout_s <= 300:
            raise DashboardError(
                f"--request-timeout must be 0.5..300 seconds, got {self.request_timeout_s}")
        if not 1 <= self.max_connections <= 100_000:
            raise DashboardError(
                f"--max-connections must be 1..100000, got {self.max_connections}")


class BadParameter(ValueError):
    """A query parameter of /api/panels that is refused; the message names it."""


def _name(params: Mapping[str, str], key: str, limit: int) -> str | None:
    value = params.get(key) or None
    if value is None:
        return None
    if len(value) > limit:
        raise BadParameter(f"bad parameter {key}: at most {limit} characters")
    if not _NAME.fullmatch(value):
        raise BadParameter(f"bad parameter {key}: letters, digits, spaces and . , : / ( ) # @ "
                           "+ - _ only")
    return value


def _enum(params: Mapping[str, str], key: str, known: frozenset[str]) -> str | None:
    value = params.get(key) or None
    if value is not None and value not in known:
        raise BadParameter(f"bad parameter {key}: one of {', '.join(sorted(known))}")
    return value


def filters_from_query(params: Mapping[str, str]) -> panels.Filters:
    """The panels' filters from the query parameters (the last of a repeated one, blank ones
    ignored, unknown ones ignored); raises BadParameter for a value out of its range or set."""
    minutes = 60
    raw = params.get("minutes") or None
    if raw is not None:
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 7
                and int(raw) <= MAX_MINUTES):
            raise BadParameter(f"bad parameter minutes: an integer from 0 (all) to "
                               f"{MAX_MINUTES}")
        minutes = int(raw)
    return panels.Filters(minutes=minutes,
                          alert_type=_enum(params, "type", KNOWN_TYPES),
                          severity=_enum(params, "severity", KNOWN_SEVERITIES),
                          location=_name(params, "location", MAX_LOCATION),
                          sensor=_name(params, "sensor", MAX_SENSOR))


def plotly_js() -> Path:
    """plotly.min.js as shipped inside the pinned `plotly` wheel."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: reinstall the pinned plotly (scripts/setup.sh)")
    return path


@cache
def _static_files() -> dict[str, Path]:
    """The only files /static/ serves, by exact name: a request never builds a path."""
    files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    files["plotly.min.js"] = plotly_js()
    return files


def _content_type(path: Path) -> str:
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype.endswith("javascript"):
        ctype += "; charset=utf-8"
    return ctype


def create_app(lake: Lakehouse, settings: ServerSettings) -> Starlette:
    """The ASGI app over `lake`, with its middlewares."""
    page = (STATIC / "index.html").read_text().replace(
        "__REFRESH_MS__", str(int(settings.refresh_s * 1000))).encode()

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-store"})

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = _static_files().get(name)
        if path is None:
            return PlainTextResponse("not found\n", 404)
        cache_control = "max-age=86400" if name == "plotly.min.js" else "no-store"
        return Response(path.read_bytes(), media_type=_content_type(path),
                        headers={"Cache-Control": cache_control})

    def api_panels(request: Request) -> Response:
        try:
            filters = filters_from_query(request.query_params)
        except BadParameter as exc:
            return PlainTextResponse(f"{exc}\n", 400)
        data = panels.all_panels(lake, filters)
        return Response(json.dumps(data, allow_nan=False), media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    def prometheus(request: Request) -> Response:
        return Response(metrics.render(lake), media_type=metrics.CONTENT_TYPE,
                        headers={"Cache-Control": "no-store"})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n", headers={"Cache-Control": "no-store"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        text = {404: "not found", 405: "method not allowed"}.get(status, "error")
        headers = exc.headers if isinstance(exc, HTTPException) else None
        return PlainTextResponse(f"{text}\n", status, headers=headers)

    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware,
                   allowed_hosts=allowed_hosts(settings.host, settings.allow_hosts),
                   www_redirect=False),
    ]
    if settings.token is not None:
        middleware.append(Middleware(TokenAuth, token=settings.token))
    middleware.append(Middleware(GZipMiddleware, minimum_size=1024, compresslevel=6))
    routes = [
        Route("/", index, methods=["GET"]),
        Route("/index.html", index, methods=["GET"]),
        Route("/static/{name:path}", static, methods=["GET"]),
        Route("/api/panels", api_panels, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={HTTPException: http_error})


def listen(host: str, port: int) -> socket.socket:
    """A bound socket (port 0 picks a free port); DashboardError when the address is taken or
    not this machine's."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise DashboardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise DashboardError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def serve(cfg: Config, settings: ServerSettings) -> None:
    """Serve until SIGINT/SIGTERM. Refuses a non-loopback bind without a token."""
    check_bind(settings.host, settings.token)
    sock = listen(settings.host, settings.port)
    bound_host, bound_port = sock.getsockname()[:2]
    if not is_loopback(bound_host):
        if settings.token is None:
            sock.close()  # a host name that resolved to a network address
            check_bind(bound_host, None)
        logger.warning("dashboard listening on %s, which is not loopback: reachable from the "
                       "network, token authentication on", bound_host)
    lake = Lakehouse(cfg)
    if lake.missing:
        logger.info("tables not created yet (panels wait for them): %s", ", ".join(lake.missing))
    app = create_app(lake, settings)
    config = uvicorn.Config(
        app,
        http=hardened_protocol(settings.request_timeout_s, settings.max_head_bytes),
        ws="none",
        lifespan="off",
        log_config=None,  # the project's logging (jobs.logs) stays as configured
        access_log=logger.isEnabledFor(logging.DEBUG),
        proxy_headers=False,
        server_header=False,
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.max_connections,
        h11_max_incomplete_event_size=settings.max_head_bytes,
        timeout_graceful_shutdown=5,
    )
    url_host = f"[{bound_host}]" if ":" in bound_host else bound_host
    logger.info("dashboard on http://%s:%s/ (Prometheus metrics on /metrics), lakehouse %s, "
                "token authentication %s", url_host, bound_port, cfg.paths.lakehouse,
                "on" if settings.token else "off (loopback)")
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler
    # it found: for SIGTERM make that an exception too, so that the stop is clean and logged.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        sock.close()
        lake.close()
    logger.info("dashboard stopped")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
