"""What keeps the dashboard safe on a network: the bind rule, the token, the ASGI middlewares
(security headers, token authentication) and a request deadline for uvicorn's h11 protocol.

The rule: on a loopback address the dashboard needs no token; on any other address it refuses
to start without one. With a token every route but /healthz needs it, presented as
`Authorization: Bearer <token>` (Prometheus' `authorization` / `bearer_token_file` scrape
settings) or, from a browser, once as `?token=<token>`, which sets an HttpOnly, SameSite=Strict
cookie holding an HMAC of the token (never the token itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import h11
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)

TOKEN_ENV = "LAKEHOUSE_DASHBOARD_TOKEN"
MIN_TOKEN_LENGTH = 16
COOKIE = "lakehouse_dashboard"
OPEN_PATHS = frozenset({"/healthz"})

# Scripts and styles are the page's own files only (no inline script, no eval). plotly.js adds
# two <style> elements of its own, allowed by hash: an empty one it fills through CSSOM, and
# MapLibre's CSS (the plotly 7.1.0 wheel's bundle; another plotly may need new hashes, which
# tests/test_dashboard_security.py reports from Chromium's console).
PLOTLY_STYLE_HASHES = ("sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
                       "sha256-ji27qzEtxXZW+7dun6UwjHXJ18e6WAin1VvNtkzIE/o=")
CSP = ("default-src 'none'; script-src 'self'; "
       f"style-src 'self' {' '.join(repr(h) for h in PLOTLY_STYLE_HASHES)}; "
       "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # Other sites may not load the JSON or /metrics as a no-cors script or image either.
    (b"cross-origin-resource-policy", b"same-origin"),
)


class DashboardError(ValueError):
    """A dashboard setting that cannot be served with; the message says which and why."""


# --- where it listens and who may ask ---------------------------------------------------------


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; a wildcard or any other name is not."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_token(token_file: Path | None, env_token: str | None) -> str | None:
    """The access token from `token_file` (first choice) or the environment's value; None when
    neither is given. Refuses an empty or short token."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DashboardError(f"cannot read the dashboard token file {token_file}: "
                                 f"{exc.strerror}") from exc
        source = f"token file {token_file}"
        if token_file.stat().st_mode & 0o077:
            logger.warning("the dashboard token file %s is readable by other users "
                           "(chmod 600 it)", token_file)
    elif env_token is not None and env_token.strip():
        token, source = env_token.strip(), f"${TOKEN_ENV}"
    else:
        return None
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
        raise DashboardError(f"the dashboard token from {source} must be at least "
                             f"{MIN_TOKEN_LENGTH} printable ASCII characters")
    return token


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token."""
    if token is None and not is_loopback(host):
        raise DashboardError(
            f"refusing to serve the dashboard on {host} (not loopback) without a token: "
            f"set {TOKEN_ENV} or pass --token-file FILE")


def _host_pattern(host: str) -> str:
    """A host as Starlette's TrustedHostMiddleware compares it (IPv6 literals in brackets)."""
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            return f"[{host.strip('[]')}]"
    except ValueError:
        pass
    return host.lower()


def allowed_hosts(bind: str, extra: Iterable[str] = ()) -> list[str]:
    """Host header values accepted: the loopback names, the bound address and `extra`; for a
    wildcard bind, this machine's name and the addresses it resolves to."""
    hosts = ["localhost", "127.0.0.1", "[::1]", _host_pattern(bind)]
    if _unspecified(bind):
        name = socket.gethostname()
        hosts += [name.lower(), socket.getfqdn(name).lower()]
        try:
            hosts += [_host_pattern(str(info[4][0])) for info in socket.getaddrinfo(name, None)]
        except OSError:
            pass
    hosts += [_host_pattern(h.strip()) for h in extra if h.strip()]
    return list(dict.fromkeys(h for h in hosts if h and not _unspecified(h)))


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


# --- ASGI middlewares -------------------------------------------------------------------------


async def _plain(send: Send, status: int, text: str,
                 headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": body})


class SecurityHeaders:
    """Adds the security headers to every response and turns any error the app raises into a
    generic 500 (the traceback goes to the log, never to the client)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers[name.decode()] = value.decode()
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await _plain(send_with_headers, 500, "internal error (see the dashboard log)\n")


def cookie_value(token: str) -> str:
    """What the browser keeps: an HMAC of the token, so the cookie jar never holds the token."""
    return hmac.new(token.encode(), b"lakehouse-dashboard-cookie", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


class TokenAuth:
    """Every path but /healthz needs the token: a bearer header, the cookie, or `?token=`
    (which also sets the cookie)."""

    def __init__(self, app: ASGIApp, *, token: str) -> None:
        self.app = app
        self.token = token
        self.cookie = cookie_value(token)

    def _presented(self, scope: Scope) -> tuple[bool, bool]:
        """(authorised, set the cookie)."""
        headers = Headers(scope=scope)
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return _same(value.strip(), self.token), False
        query = scope.get("query_string", b"").decode("latin-1")
        given = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == "token"]
        if given:
            ok = _same(given[-1], self.token)
            return ok, ok
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return _same(value, self.cookie), False
        return False, False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        ok, set_cookie = self._presented(scope)
        if not ok:
            client = scope.get("client") or ("?", 0)
            logger.warning("dashboard: refused %s %s from %s (no or wrong token)",
                           scope.get("method"), scope["path"], client[0])
            await _plain(send, 401, "unauthorized: this dashboard needs its token "
                         "(Authorization: Bearer <token>, or open /?token=<token> once)\n",
                         [(b"www-authenticate", b'Bearer realm="lakehouse-dashboard"')])
            return
        if not set_cookie:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).append(
                    "set-cookie", f"{COOKIE}={self.cookie}; Path=/; HttpOnly; SameSite=Strict")
            await send(message)

        await self.app(scope, receive, send_with_cookie)


# --- uvicorn --------------------------------------------------------------------------------


class HardenedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request to arrive whole, a hard limit on
    the size of a request's head, and the security headers on the errors it sends itself.

    uvicorn times out only a connection left idle after a response, and any byte received
    cancels that timer: a client that sends half a request line and stalls (slow-loris) would
    hold its connection for ever. Here the request line, headers and body must all arrive
    within `request_timeout_s` of the connection opening or of the request's first byte;
    otherwise the connection is closed. h11's own size limit applies only while a head is
    incomplete (a whole 60 kB head read at once passes), so the bytes received before a head
    is complete are counted here too. Subclass with the values set (`hardened_protocol`).
    """

    request_timeout_s: float = 10.0
    max_head_bytes: int = 16 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout_s, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.debug("closing a connection from %s: no whole request within %.0f s",
                         self.client, self.request_timeout_s)
            self.transport.close()

    def _refuse(self, status: int, reason: str, text: str) -> None:
        """Answers and closes, whatever state h11 is in (no request may have been parsed)."""
        body = f"{text}\n".encode()
        head = [f"HTTP/1.1 {status} {reason}".encode(),
                b"content-type: text/plain; charset=utf-8", b"connection: close",
                b"content-length: " + str(len(body)).encode()]
        head += [name + b": " + value for name, value in SECURITY_HEADERS]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._arm()  # a new request begins (a no-op while one is already being received)
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._disarm()
                self._refuse(431, "Request Header Fields Too Large",
                             f"request line and headers over {self.max_head_bytes} bytes")
                return
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._head_bytes = 0
            if self.conn.their_state is not h11.SEND_BODY:
                self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad Request", msg)


def hardened_protocol(request_timeout_s: float,
                      max_head_bytes: int) -> type[HardenedH11Protocol]:
    return type("HardenedH11Protocol", (HardenedH11Protocol,),
                {"request_timeout_s": float(request_timeout_s),
                 "max_head_bytes": int(max_head_bytes)})
