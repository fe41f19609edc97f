"""Hostile requests against the real dashboard server (`lakehouse dashboard` in a subprocess),
sent byte for byte over raw sockets: path traversal, huge and malformed parameters, quotes and
SQL in names, foreign Host headers, oversized request heads, slow-loris connections, missing and
wrong tokens. Most run on a lakehouse whose tables do not exist yet (no Spark); the one that
draws the sample tables under the CSP is marked `spark`."""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dashboard.security import (
    COOKIE,
    CSP,
    DashboardError,
    allowed_hosts,
    check_bind,
    cookie_value,
    is_loopback,
    load_token,
)
from dashboard.server import MAX_MINUTES, BadParameter, filters_from_query, plotly_js
from jobs.config import REPO_ROOT, Config
from jobs.tables import PIPELINE_METRICS

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "t0k3n-for-the-test-Zq8Vx2Lm"
CONF_MARKER = b"severities:"  # a line of conf/pipeline.yaml that must never be served
REQUEST_TIMEOUT_S = 2.0
PANEL_KEYS = {"active", "pipeline", "alerts", "locations", "alert_counts", "quarantine", "status",
              "sensors", "sensor", "generated_at", "tables"}


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def network_address() -> tuple[str, str]:
    """(address to bind, address to connect to) off loopback: this machine's own non-loopback
    IPv4 address if it has one, else the wildcard, reached through loopback (the token rule
    follows the bound address, not the client's)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # UDP connect: a route lookup, no packet sent
            addr = s.getsockname()[0]
        if not ipaddress.ip_address(addr).is_loopback:
            with socket.socket() as probe:
                probe.bind((addr, 0))
            return addr, addr
    except OSError:
        pass
    return "0.0.0.0", "127.0.0.1"


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse_reply(raw: bytes) -> Reply:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), f"not an HTTP answer: {raw[:200]!r}"
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip().lower(), value.strip()))
    return Reply(int(lines[0].split()[1]), headers, body)


def send_raw(addr: tuple[str, int], data: bytes, timeout: float = 15.0) -> bytes:
    """Sends `data` as is and reads until the server closes the connection."""
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


class Server:
    """`lakehouse dashboard` in a subprocess on `bind`, reached at `connect`."""

    def __init__(self, cfg: Config, log: Path, *, bind: str = "127.0.0.1",
                 connect: str = "127.0.0.1", args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.port = _free_port(bind)
        self.addr = (connect, self.port)
        self.host_header = f"{connect}:{self.port}"
        self.log = log
        self._log = log.open("wb")
        child_env = {k: v for k, v in os.environ.items() if k != "LAKEHOUSE_DASHBOARD_TOKEN"}
        child_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "--set", f"paths.data_dir={cfg.paths.data_dir}",
             "--set", f"paths.lakehouse_root={cfg.paths.lakehouse}",
             "dashboard", "--host", bind, "--port", str(self.port), "--refresh", "2",
             "--request-timeout", str(REQUEST_TIMEOUT_S), *args],
            cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT, env=child_env)
        for _ in range(240):
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited: {log.read_text()}")
            try:
                if self.get("/healthz").status == 200:
                    return
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"dashboard did not answer on {self.addr}: {log.read_text()}")

    def get(self, path: str, headers: dict[str, str] | None = None,
            host: str | None = None, timeout: float = 15.0) -> Reply:
        """GET `path` exactly as written (no normalisation, no encoding)."""
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host_header if host is None else host}",
                 "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")
        return parse_reply(send_raw(self.addr, raw, timeout))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="module")
def empty_lake(base_cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Config:
    """A lakehouse whose tables are not created yet: the server answers without Spark."""
    root = tmp_path_factory.mktemp("empty-lakehouse")
    return base_cfg.with_overrides({"paths.lakehouse_root": str(root)})


@pytest.fixture(scope="module")
def server(empty_lake: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(empty_lake, tmp_path_factory.mktemp("dashboard") / "dashboard.log")
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def net_server(empty_lake: Config, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Bound off loopback, with the token from the environment."""
    bind, connect = network_address()
    s = Server(empty_lake, tmp_path_factory.mktemp("dashboard-net") / "dashboard.log",
               bind=bind, connect=connect, env={"LAKEHOUSE_DASHBOARD_TOKEN": TOKEN})
    try:
        yield s
    finally:
        s.stop()


# --- the rules, without a server ----------------------------------------------------------


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("LOCALHOST", True), ("0.0.0.0", False), ("::", False),
    ("192.0.2.2", False), ("10.0.0.1", False), ("fd00::2", False), ("localhost.evil", False),
    ("myhost", False), ("", False),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_bind_refuses_network_without_token() -> None:
    check_bind("127.0.0.1", None)
    check_bind("192.0.2.2", TOKEN)
    with pytest.raises(DashboardError, match="refusing to serve the dashboard on 0.0.0.0"):
        check_bind("0.0.0.0", None)


def test_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts("192.0.2.2", ["Dash.Example"])[-2:] == ["192.0.2.2", "dash.example"]
    assert "[fd00::2]" in allowed_hosts("fd00::2")
    wildcard = allowed_hosts("0.0.0.0")
    assert "0.0.0.0" not in wildcard and socket.gethostname().lower() in wildcard


def test_load_token(tmp_path: Path) -> None:
    assert load_token(None, None) is None and load_token(None, "  ") is None
    assert load_token(None, f" {TOKEN}\n") == TOKEN
    f = tmp_path / "token"
    f.write_text(f"{TOKEN}x\n")
    assert load_token(f, TOKEN) == TOKEN + "x"  # the file wins over the environment
    for bad in ("short", "x" * 15, "tab\tinside-the-token", "non-ascii-\u00e9-token-long"):
        with pytest.raises(DashboardError, match="at least 16 printable ASCII"):
            load_token(None, bad)
    assert TOKEN not in cookie_value(TOKEN) and cookie_value(TOKEN) != cookie_value(TOKEN + "x")


def test_filters_from_query() -> None:
    f = filters_from_query({"minutes": "15", "type": "HIGH_TEMP", "severity": "CRITICAL",
                            "location": "Building A - Floor 1", "sensor": "SENSOR_001"})
    assert (f.minutes, f.alert_type, f.severity, f.location, f.sensor) == (
        15, "HIGH_TEMP", "CRITICAL", "Building A - Floor 1", "SENSOR_001")
    assert filters_from_query({}).minutes == 60
    assert filters_from_query({"minutes": str(MAX_MINUTES)}).minutes == MAX_MINUTES
    with pytest.raises(BadParameter, match="^bad parameter minutes:"):
        filters_from_query({"minutes": str(MAX_MINUTES + 1)})


# --- path traversal ------------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    "/static/../../conf/pipeline.yaml",
    "/static/../../../etc/passwd",
    "/static/..%2f..%2fconf%2fpipeline.yaml",
    "/static/%2e%2e/%2e%2e/conf/pipeline.yaml",
    "/static/%2e%2e%2f%2e%2e%2fconf%2fpipeline.yaml",
    "/static/%252e%252e/%252e%252e/conf/pipeline.yaml",
    "/static/style.css/../../../conf/pipeline.yaml",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/..%5c..%5cconf%5cpipeline.yaml",
    "/static/%00../../conf/pipeline.yaml",
    "/static/./../server.py",
    "/static/",
    "/../conf/pipeline.yaml",
])
def test_path_traversal_is_404(server: Server, path: str) -> None:
    reply = server.get(path)
    assert reply.status == 404, (path, reply.status, reply.text[:200])
    assert CONF_MARKER not in reply.body and b"root:" not in reply.body
    assert b"import" not in reply.body


@pytest.mark.parametrize("path", ["/static/..\\..\\conf\\pipeline.yaml", "/static/\x00x"])
def test_path_with_bytes_http_forbids_is_refused(server: Server, path: str) -> None:
    reply = server.get(path)
    assert reply.status in (400, 404), (path, reply.status)
    assert CONF_MARKER not in reply.body


def test_static_files_are_served(server: Server) -> None:
    """The control for the traversal tests: the same route serves its own files."""
    for name in ("app.js", "style.css", "plotly.min.js"):
        reply = server.get(f"/static/{name}")
        assert reply.status == 200, name
    assert server.get("/static/style.css").body == (
        REPO_ROOT / "dashboard" / "static" / "style.css").read_bytes()


# --- parameters ----------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "param"), [
    ("minutes=10000000000", "minutes"),
    ("minutes=abc", "minutes"),
    ("minutes=-1", "minutes"),
    ("minutes=1e3", "minutes"),
    ("minutes=60.5", "minutes"),
    ("minutes=%2060", "minutes"),
    ("minutes=0x10", "minutes"),
    ("minutes=527041", "minutes"),
    ("minutes=%D9%A1%D9%A2", "minutes"),  # Arabic-Indic digits: str.isdigit() says yes
    ("minutes=1;DROP%20TABLE%20alerts", "minutes"),
    ("type=NOPE", "type"),
    ("type=high_temp", "type"),
    ("type=HIGH_TEMP'%20OR%20'1'='1", "type"),
    ("severity=LOUD", "severity"),
    ("severity=CRITICAL%00", "severity"),
    ("sensor=" + "x" * 10_000, "sensor"),
    ("location=" + "B" * 10_000, "location"),
    ("location=Building%20A'%20OR%20'1'='1", "location"),
    ("location=x%22%3B%20DROP%20TABLE%20alerts%3B%20--", "location"),
    ("sensor=SENSOR_001'--", "sensor"),
    ("sensor=SENSOR_001%22", "sensor"),
    ("sensor=a%5Cb", "sensor"),
    ("sensor=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "sensor"),
    ("sensor=x%0D%0ASet-Cookie:%20a=b", "sensor"),
    ("sensor=%FF%FE", "sensor"),
    ("location=a;b", "location"),
    ("minutes=60&minutes=abc", "minutes"),  # the last of a repeated parameter counts
])
def test_bad_parameter_is_400_naming_it(server: Server, query: str, param: str) -> None:
    reply = server.get(f"/api/panels?{query}")
    assert reply.status == 400, (query, reply.status, reply.text[:300])
    assert reply.text.startswith(f"bad parameter {param}:"), reply.text[:300]
    assert len(reply.body) < 300, reply.text
    assert reply.header("content-type") == "text/plain; charset=utf-8"
    for leak in ("SELECT", "FROM", "Error", "Traceback", "duckdb", "delta_scan", "INTERVAL"):
        assert leak not in reply.text, (leak, reply.text)
    assert reply.header("set-cookie") is None


@pytest.mark.parametrize("query", [
    "", "minutes=0", "minutes=15", "minutes=527040", "minutes=", "type=&severity=",
    "minutes=1440&type=HIGH_TEMP&severity=CRITICAL&location=Building%20A%20-%20Floor%201"
    "&sensor=SENSOR_001",
    "location=Beijing%20-%20Aotizhongxin", "sensor=" + "S" * 128, "location=B%C3%BCro%202",
    "unknown=whatever",
])
def test_good_parameters_answer_the_panels(server: Server, query: str) -> None:
    reply = server.get(f"/api/panels?{query}")
    assert reply.status == 200, (query, reply.text[:300])
    assert set(json.loads(reply.body)) == PANEL_KEYS


def test_oversized_request_head_is_refused_and_server_lives(server: Server) -> None:
    for reply in (server.get("/api/panels?sensor=" + "x" * 20_000),
                  server.get("/healthz", headers={f"X-Pad-{i}": "y" * 200 for i in range(200)}),
                  server.get("/healthz", headers={"X-Big": "z" * 60_000})):
        assert reply.status == 431, reply.text[:200]
        assert reply.text == "request line and headers over 16384 bytes\n"
        assert reply.header("x-content-type-options") == "nosniff"
    assert server.get("/healthz").status == 200


def test_malformed_request_line_is_400_with_headers(server: Server) -> None:
    for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
                b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", b"\xff\xfe\r\n\r\n"):
        reply = parse_reply(send_raw(server.addr, raw))
        assert reply.status == 400, raw
        assert reply.header("content-security-policy") == CSP, raw
    assert server.get("/healthz").status == 200


def test_server_side_error_is_a_generic_500(empty_lake: Config, tmp_path: Path) -> None:
    """A table whose log is not JSON: DuckDB's error (paths, a Rust backtrace) goes to the log,
    the client gets one generic line."""
    cfg = empty_lake.with_overrides({"paths.lakehouse_root": str(tmp_path / "lake")})
    s = Server(cfg, tmp_path / "dashboard.log")
    try:
        assert s.get("/metrics").status == 200
        log_dir = cfg.paths.table(PIPELINE_METRICS) / "_delta_log"
        log_dir.mkdir(parents=True)
        (log_dir / f"{0:020d}.json").write_text("this is not a Delta commit\n")
        for path in ("/metrics", "/api/panels"):
            reply = s.get(path)
            assert reply.status == 500, (path, reply.status, reply.text[:300])
            assert reply.text == "internal error (see the dashboard log)\n"
            assert reply.header("x-content-type-options") == "nosniff"
        assert s.get("/healthz").status == 200
        time.sleep(0.3)
        logged = s.log.read_text()
        assert "GET /metrics failed" in logged and "DeltaKernel" in logged
    finally:
        s.stop()


# --- Host header (DNS rebinding) -----------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8501", "127.0.0.1.evil.example",
                                  "localhost.evil.example", "[::2]", "", "a b"])
def test_foreign_host_header_is_400(server: Server, host: str) -> None:
    for path in ("/api/panels", "/metrics", "/"):
        reply = server.get(path, host=host)
        assert reply.status == 400, (host, path, reply.status)
        assert b"pipeline" not in reply.body and b"lakehouse_" not in reply.body
        assert reply.header("content-security-policy") == CSP


def test_loopback_host_headers_are_accepted(server: Server) -> None:
    for host in (f"127.0.0.1:{server.port}", "localhost", f"LOCALHOST:{server.port}", "[::1]"):
        assert server.get("/api/panels", host=host).status == 200, host


def test_request_without_host_is_400(server: Server) -> None:
    raw = send_raw(server.addr, b"GET /api/panels HTTP/1.0\r\n\r\n")
    assert parse_reply(raw).status == 400


# --- headers and gzip ----------------------------------------------------------------------


def test_security_headers_on_every_response(server: Server) -> None:
    replies = {
        "page": server.get("/"),
        "static": server.get("/static/app.js"),
        "api": server.get("/api/panels"),
        "metrics": server.get("/metrics"),
        "404": server.get("/nope"),
        "400 parameter": server.get("/api/panels?minutes=abc"),
        "400 host": server.get("/", host="evil.example"),
        "405": parse_reply(send_raw(server.addr, (
            f"POST /api/panels HTTP/1.1\r\nHost: {server.host_header}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n").encode())),
    }
    assert replies["405"].status == 405
    for name, r in replies.items():
        csp = r.header("content-security-policy") or ""
        assert "default-src 'none'" in csp and "script-src 'self';" in csp, (name, csp)
        assert "frame-ancestors 'none'" in csp and "unsafe" not in csp, (name, csp)
        assert r.header("x-content-type-options") == "nosniff", name
        assert r.header("x-frame-options") == "DENY", name
        assert r.header("referrer-policy") == "no-referrer", name
        assert r.header("server") is None, name  # no server banner
    # The page itself obeys the CSP: no inline script, only the page's own files.
    page = replies["page"].text
    assert page.count("<script") == page.count('<script src="/static/') == 2
    assert "__REFRESH_MS__" not in page and 'content="2000"' in page


def test_plotly_is_sent_gzipped(server: Server) -> None:
    wheel = plotly_js().read_bytes()
    zipped = server.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert zipped.header("content-encoding") == "gzip"
    assert len(zipped.body) < len(wheel) / 2, (len(zipped.body), len(wheel))
    assert gzip.decompress(zipped.body) == wheel
    assert "accept-encoding" in (zipped.header("vary") or "").lower()
    plain = server.get("/static/plotly.min.js")
    assert plain.header("content-encoding") is None and plain.body == wheel


# --- slow-loris and the connection limit ---------------------------------------------------


def _open_stalled(addr: tuple[str, int], n: int, host_header: str) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(addr, timeout=10)
        if i % 4 == 0:
            pass  # connects, sends nothing
        elif i % 4 == 1:
            s.sendall(b"GET /api/pan")  # half a request line
        elif i % 4 == 2:
            s.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host_header}\r\nX-a: b".encode())
        else:
            s.sendall(f"POST /api/panels HTTP/1.1\r\nHost: {host_header}\r\n"
                      "Content-Length: 100000\r\n\r\nabc".encode())  # a body that never comes
        socks.append(s)
    return socks


def test_slow_loris_connections_neither_hold_the_server_nor_stay_open(server: Server) -> None:
    opened = time.monotonic()
    socks = _open_stalled(server.addr, 200, server.host_header)
    try:
        # While all 200 are open, the server answers at once.
        for path in ("/healthz", "/api/panels", "/metrics"):
            t = time.monotonic()
            assert server.get(path, timeout=5).status == 200, path
            assert time.monotonic() - t < 2.0, (path, time.monotonic() - t)
        # One more trickles a request that never ends, a byte at a time: no byte is a reprieve.
        trickler = socket.create_connection(server.addr, timeout=10)
        socks.append(trickler)
        trickle = f"GET /healthz HTTP/1.1\r\nHost: {server.host_header}\r\nX-Slow: ".encode()
        trickle_closed = None
        t = time.monotonic()
        for byte in trickle + b"a" * 200:
            try:
                trickler.sendall(bytes([byte]))
            except OSError:
                trickle_closed = time.monotonic() - t
                break
            time.sleep(0.05)
        assert trickle_closed is not None and trickle_closed < REQUEST_TIMEOUT_S + 2, (
            trickle_closed)
        # The server closes every stalled connection by itself within its deadline (the
        # never-ending POST may get its 405 first).
        for i, s in enumerate(socks):
            s.settimeout(REQUEST_TIMEOUT_S + 10)
            data = b""
            try:
                while chunk := s.recv(65536):
                    data += chunk
            except ConnectionResetError:
                pass
            except TimeoutError:
                pytest.fail(f"stalled connection {i} still open {time.monotonic() - opened:.0f}"
                            " s after it was opened")
            assert data == b"" or data.startswith(b"HTTP/1.1 405"), (i, data[:100])
        elapsed = time.monotonic() - opened
        assert elapsed < REQUEST_TIMEOUT_S + 8, elapsed
    finally:
        for s in socks:
            s.close()
    assert server.get("/healthz").status == 200


def test_connections_beyond_the_limit_get_503(empty_lake: Config, tmp_path: Path) -> None:
    s = Server(empty_lake, tmp_path / "dashboard.log", args=("--max-connections", "20"))
    idle: list[socket.socket] = []
    try:
        idle = [socket.create_connection(s.addr, timeout=10) for _ in range(25)]
        time.sleep(0.3)
        assert s.get("/healthz").status == 503
        for c in idle:
            c.close()
        time.sleep(0.5)
        assert s.get("/healthz").status == 200
    finally:
        for c in idle:
            c.close()
        s.stop()


# --- token authentication ------------------------------------------------------------------


def _dashboard_cmd(cfg: Config, *args: str, env: dict[str, str] | None = None,
                   ) -> subprocess.CompletedProcess:
    child_env = {k: v for k, v in os.environ.items() if k != "LAKEHOUSE_DASHBOARD_TOKEN"}
    child_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "jobs.cli", "--set", f"paths.data_dir={cfg.paths.data_dir}",
         "--set", f"paths.lakehouse_root={cfg.paths.lakehouse}", "dashboard", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=child_env)


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "network"])
def test_non_loopback_bind_without_token_is_refused_in_one_line(empty_lake: Config,
                                                                bind: str) -> None:
    host = network_address()[0] if bind == "network" else bind
    port = _free_port("127.0.0.1")
    out = _dashboard_cmd(empty_lake, "--host", host, "--port", str(port))
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [f"Error: refusing to serve the dashboard on {host} (not loopback) "
                     "without a token: set LAKEHOUSE_DASHBOARD_TOKEN or pass --token-file "
                     "FILE"], out.stderr
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.parametrize(("env", "args", "message"), [
    ({"LAKEHOUSE_DASHBOARD_TOKEN": "short"}, (), "at least 16 printable ASCII characters"),
    ({}, ("--token-file", "/nonexistent/token"), "cannot read the dashboard token file"),
])
def test_bad_token_is_refused_in_one_line(empty_lake: Config, env: dict[str, str],
                                          args: tuple[str, ...], message: str) -> None:
    out = _dashboard_cmd(empty_lake, "--host", "0.0.0.0", "--port", "0", *args, env=env)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "short" not in out.stderr


def test_off_loopback_the_token_is_required(net_server: Server) -> None:
    s = net_server
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for path in ("/", "/api/panels", "/metrics", "/static/app.js"):
        for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"},
                        {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer"},
                        {"Authorization": f"Basic {TOKEN}"}, {"Cookie": f"{COOKIE}={TOKEN}"},
                        {"Cookie": f"{COOKIE}=0000"}):
            reply = s.get(path, headers=headers)
            assert reply.status == 401, (path, headers, reply.status)
            assert reply.header("www-authenticate") == 'Bearer realm="lakehouse-dashboard"'
            assert b"lakehouse_" not in reply.body and b"pipeline" not in reply.body
        assert s.get(path + "?token=wrong").status == 401
        assert s.get(path, headers=bearer).status == 200, path
        assert s.get(path, headers={"Authorization": f"bearer {TOKEN}"}).status == 200
    metrics = s.get("/metrics", headers=bearer)
    assert "lakehouse_metrics_table_up 0" in metrics.text
    assert s.get("/healthz").status == 200  # open, for liveness probes


def test_token_in_the_url_once_sets_a_strict_cookie(net_server: Server) -> None:
    s = net_server
    first = s.get(f"/?token={TOKEN}&minutes=15")
    assert first.status == 200
    cookie = first.header("set-cookie") or ""
    name_value, *attrs = [p.strip() for p in cookie.split(";")]
    assert set(attrs) == {"Path=/", "HttpOnly", "SameSite=Strict"}, cookie
    name, _, value = name_value.partition("=")
    assert name == COOKIE and value and TOKEN not in value
    for path in ("/api/panels?minutes=15", "/metrics", "/"):
        assert s.get(path, headers={"Cookie": f"other=1; {name_value}"}).status == 200, path
    # A bearer request never gets a cookie.
    assert s.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).header(
        "set-cookie") is None


def test_off_loopback_warns_and_never_logs_the_token(net_server: Server) -> None:
    net_server.get("/metrics", headers={"Authorization": "Bearer wrong-token-wrong-token"})
    net_server.get(f"/?token={TOKEN}")
    time.sleep(0.3)
    logged = net_server.log.read_text()
    assert "which is not loopback" in logged and "token authentication on" in logged
    assert "refused GET /metrics" in logged
    assert TOKEN not in logged and "wrong-token" not in logged


def test_foreign_host_is_400_off_loopback_too(net_server: Server) -> None:
    reply = net_server.get("/api/panels", host="evil.example",
                           headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status == 400


def test_token_file_turns_authentication_on_loopback_too(empty_lake: Config,
                                                         tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    s = Server(empty_lake, tmp_path / "dashboard.log", args=("--token-file", str(token_file)))
    try:
        assert s.get("/metrics").status == 401
        assert s.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    finally:
        s.stop()
    assert TOKEN not in s.log.read_text()


# --- the page in a real browser under the CSP ----------------------------------------------


def _chromium(url: str, tmp: Path) -> tuple[str, str]:
    """(DOM after 6 s of virtual time, Chromium's console log)."""
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run scripts/setup.sh (apt-get install chromium)")
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    out = subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,2600",
         "--virtual-time-budget=6000", "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=True)
    return out.stdout, out.stderr


def _csp_violations(console: str) -> list[str]:
    return [line for line in console.splitlines() if "Content Security Policy" in line]


def test_browser_presents_the_token_once_and_obeys_the_csp(net_server: Server,
                                                           tmp_path: Path) -> None:
    base = f"http://{net_server.host_header}/"
    dom, console = _chromium(base, tmp_path)
    assert "unauthorized" in dom and 'data-rendered="' not in dom
    dom, console = _chromium(base + f"?token={TOKEN}", tmp_path)
    # The page's own fetches of /api/panels carried the cookie: it rendered and refreshed.
    assert 'data-rendered="' in dom, dom[:500]
    assert 'data-status="waiting"' in dom
    assert _csp_violations(console) == []


@pytest.mark.spark
def test_sample_tables_draw_under_the_csp(sample_lake: Config, tmp_path: Path) -> None:
    s = Server(sample_lake, tmp_path / "dashboard.log")
    try:
        dom, console = _chromium(f"http://{s.host_header}/", tmp_path)
    finally:
        s.stop()
    assert dom.count('data-status="ok"') == 7, dom[:500]
    assert dom.count("main-svg") >= 8
    assert _csp_violations(console) == []
