"""The dashboard's HTTP server: one static page, a JSON endpoint, and Prometheus `/metrics`.

Standard library only (http.server); the page draws with plotly.js served from the `plotly`
wheel, so nothing is fetched from the internet at run time. All data comes through DuckDB
(`jobs.serving.Lakehouse`), never Spark.

    GET /                 the page (static/index.html)
    GET /static/<file>    app.js, style.css, plotly.min.js
    GET /api/panels       every panel as JSON; ?minutes=&type=&severity=&location=&sensor=
    GET /metrics          Prometheus text format from gold/pipeline_metrics
    GET /healthz          "ok"
"""

from __future__ import annotations

import json
import logging
import mimetypes
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from dashboard import metrics, panels
from jobs.config import Config
from jobs.serving import Lakehouse

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def plotly_js() -> Path:
    """plotly.min.js as shipped inside the pinned `plotly` wheel."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: reinstall the pinned plotly (scripts/setup.sh)")
    return path


def filters_from_query(query: str) -> panels.Filters:
    q = {k: v[-1] for k, v in parse_qs(query).items() if v and v[-1]}
    try:
        minutes = max(0, int(q.get("minutes", 60)))
    except ValueError:
        minutes = 60
    return panels.Filters(minutes=minutes, alert_type=q.get("type"),
                          severity=q.get("severity"), location=q.get("location"),
                          sensor=q.get("sensor"))


class Handler(BaseHTTPRequestHandler):
    server_version = "lakehouse-dashboard"

    def __init__(self, *args, lake: Lakehouse, refresh_s: float, **kwargs) -> None:  # noqa: ANN002,ANN003
        self.lake = lake
        self.refresh_s = refresh_s
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        logger.debug("%s " + format, self.address_string(), *args)

    def _send(self, body: bytes, content_type: str, status: int = 200,
              cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _file(self, path: Path, cache: str = "no-store") -> None:
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        self._send(path.read_bytes(), ctype, cache=cache)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        try:
            if url.path in ("/", "/index.html"):
                html = (STATIC / "index.html").read_text()
                html = html.replace("__REFRESH_MS__", str(int(self.refresh_s * 1000)))
                self._send(html.encode(), "text/html; charset=utf-8")
            elif url.path == "/static/plotly.min.js":
                self._file(plotly_js(), cache="max-age=86400")
            elif url.path.startswith("/static/"):
                name = url.path.removeprefix("/static/")
                path = (STATIC / name).resolve()
                if path.parent != STATIC.resolve() or not path.is_file():
                    self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)
                else:
                    self._file(path)
            elif url.path == "/api/panels":
                data = panels.all_panels(self.lake, filters_from_query(url.query))
                self._send(json.dumps(data, allow_nan=False).encode(), "application/json")
            elif url.path == "/metrics":
                self._send(metrics.render(self.lake).encode(), metrics.CONTENT_TYPE)
            elif url.path == "/healthz":
                self._send(b"ok\n", "text/plain")
            else:
                self._send(b"not found\n", "text/plain", HTTPStatus.NOT_FOUND)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away mid-answer
        except Exception as exc:
            logger.exception("GET %s failed", self.path)
            self._send(f"error: {exc}\n".encode(), "text/plain",
                       HTTPStatus.INTERNAL_SERVER_ERROR)


def make_server(cfg: Config, *, host: str = "127.0.0.1", port: int = 8501,
                refresh_s: float = 5.0) -> ThreadingHTTPServer:
    """A bound, not yet serving, dashboard server (port 0 picks a free port)."""
    lake = Lakehouse(cfg)
    if lake.missing:
        logger.info("tables not created yet (panels wait for them): %s", ", ".join(lake.missing))
    server = ThreadingHTTPServer((host, port),
                                 partial(Handler, lake=lake, refresh_s=refresh_s))
    server.daemon_threads = True
    return server


def serve(cfg: Config, *, host: str = "127.0.0.1", port: int = 8501,
          refresh_s: float = 5.0) -> None:
    server = make_server(cfg, host=host, port=port, refresh_s=refresh_s)
    bound_host, bound_port = server.server_address[:2]
    logger.info("dashboard on http://%s:%s/ (Prometheus metrics on /metrics), lakehouse %s",
                bound_host, bound_port, cfg.paths.lakehouse)
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        logger.info("dashboard stopping")
    finally:
        server.server_close()
