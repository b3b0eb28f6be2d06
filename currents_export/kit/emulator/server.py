"""HTTP routing and the server's lifecycle; all behaviour lives in ``EmulatorState``.

Every request must name the emulator in its ``Host`` header (``127.0.0.1:PORT``,
``localhost:PORT``, ``[::1]:PORT``, the address it listens on, or a name allowed with
``allowed_hosts``; listening on every interface, any IP address with the port), else 403: a
web page whose name was rebound to 127.0.0.1 (DNS rebinding) reaches nothing. The control API
(``/_emulator/``) also refuses a request whose ``Origin`` is another site (403) and a write
(POST, PATCH, PUT, DELETE) with a body or a content type other than JSON (415), which a page
can send to any address without asking (a form, ``fetch`` in ``no-cors`` mode): a page open
in the user's browser cannot reset the emulator, change its config or faults, nor read what
it stored. The config it shows names API keys by their fingerprint, never in full.

What it stored, by pages (events are only ever appended until a reset, so an offset is a
stable cursor):

* ``GET /_emulator/events`` — the stored events in arrival order, as Amplitude keeps them.
  Filters (exact match, combined): ``api_key``, ``user_id``, ``device_id``, ``event_type``,
  ``insert_id``. Paging: ``limit`` (events per page, 0 to 10,000, default 1,000; 0 gives
  only the counts) and ``offset`` (events of the filtered list to skip, default 0). The
  answer: ``{"events": [...], "count": events in this page, "total": events matching,
  "offset", "limit", "next_offset": the next page's offset or null, "next": the next
  page's path and query or null}``; follow ``next`` until it is null.
* ``GET /_emulator/counts`` — how many stored events there are, by ``by``
  (``event_type``, the default, ``user_id`` or ``device_id``), under the same filters:
  ``{"by", "total": events matching, "without": those with no value for it (``user_id``:
  device-only events), "distinct": how many values, "counts": {value: events}, the
  ``limit`` (default 1,000, at most 10,000) largest first, "limit"}``.

Unknown parameters and bad values are a 400 naming them.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import socketserver
import struct
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlencode, urlsplit

import orjson

from .config import REDACTED, ConfigError, EmulatorConfig, config_to_dict
from .deletions import DELETIONS_PATH
from .faults import MAX_DELAY_S, FaultRule, FaultRuleError, parse_fault_document
from .state import (
    COUNT_KEYS,
    EVENT_FILTERS,
    IDENTIFY_FILTERS,
    EmulatorState,
    FiredFault,
    key_fingerprint,
)
from .validation import (
    ERR_INVALID_JSON,
    ERR_PATH,
    Reply,
    error_reply,
    first_values,
    parse_form,
    too_large_reply,
)

_INGEST_ROUTES = {"/2/httpapi": "v2", "/batch": "batch"}
_IDENTIFY_ROUTES = {"/identify": "identify", "/groupidentify": "groupidentify"}
_CONTROL_PREFIX = "/_emulator/"
_CONTROL_MAX_BODY = 1_048_576
_DRAIN_CHUNK = 65_536
_POLL_INTERVAL_S = 0.05  # how quickly stop() takes effect
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")  # every interface
_WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
DEFAULT_PAGE = 1_000  # events (or counted values) per answer, unless ``limit`` says
MAX_PAGE = 10_000
ERR_HOST = (
    "Host not allowed: the emulator answers requests addressed to it "
    "(127.0.0.1, localhost or [::1] and its port, or a name allowed with --allow-host)"
)
ERR_ORIGIN = "Origin not allowed: the control API answers pages of the emulator's own origin"
ERR_CONTENT_TYPE = (
    "Unsupported content type: a control API request with a body must be "
    "Content-Type: application/json"
)


def _authority(value: str) -> tuple[str, int] | None:
    """``host[:port]`` as (host in lower case, IPv6 in brackets; port, 80 when absent), or
    None when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text_or_empty = value.partition(":")
        port_text = port_text_or_empty if colon else None
    if not host or any(c in host for c in "/?#@ \t"):
        return None
    if port_text is None:
        return host, 80
    if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5:
        return None
    return host, int(port_text)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") else host)
    except ValueError:
        return False
    return True


class HostCheck:
    """Which ``Host`` (and ``Origin``) names the emulator: the loopback names, the address
    it listens on and ``allowed`` names, with its port; listening on every interface
    (``0.0.0.0``), any IP address too (a rebound page always names a domain)."""

    __slots__ = ("any_ip", "names", "port")

    def __init__(self, bind_host: str, port: int, allowed: Iterable[str] = ()) -> None:
        names = set(_LOOPBACK_NAMES)
        host = bind_host.strip().lower()
        self.any_ip = host in _WILDCARD_HOSTS
        for name in (*(() if self.any_ip else (host,)), *allowed):
            name = name.strip().lower()
            names.add(f"[{name}]" if ":" in name and not name.startswith("[") else name)
        self.names = frozenset(names)
        self.port = port

    def allows(self, value: str | None) -> bool:
        """Whether a ``Host`` header (or an origin's ``host:port``) names the emulator."""
        parsed = _authority(value) if value else None
        if parsed is None or parsed[1] != self.port:
            return False
        host = parsed[0]
        return host in self.names or (self.any_ip and _is_ip_literal(host))


def shown_config(config: EmulatorConfig) -> dict[str, Any]:
    """The config as ``GET /_emulator/config`` shows it: API keys (``valid_api_keys`` and the
    keys of ``secret_keys``) by their fingerprint, secret keys as ``"<redacted>"``."""
    out = config_to_dict(config)
    keys = out.get("valid_api_keys")
    if keys is not None:
        out["valid_api_keys"] = sorted(str(key_fingerprint(str(k))) for k in keys)
    secrets = out.get("secret_keys")
    if isinstance(secrets, Mapping):
        shown: dict[str, str] = {}
        for key in sorted(secrets):
            name = base = str(key_fingerprint(str(key)))
            n = 1
            while name in shown:  # two keys with one fingerprint stay two entries
                n += 1
                name = f"{base} ({n})"
            shown[name] = REDACTED
        out["secret_keys"] = shown
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Connections waiting to be accepted. socketserver's default, 5, is overrun when several
    # worker processes open a connection per lane at once: the kernel then drops the last
    # handshake step, and a client's first request fails after about a second.
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], state: EmulatorState, allowed_hosts: Iterable[str] = ()
    ) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.hosts = HostCheck(address[0], int(self.server_address[1]), allowed_hosts)
        self.stopping = threading.Event()  # wakes handlers sleeping in a "delay" fault
        self._connections: set[Any] = set()
        self._connections_lock = threading.Lock()

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host (slow on some machines)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up mid-request (a timeout, a killed process) is normal here."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)

    def track(self, connection: Any, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Shut down idle keep-alive connections so their handler threads end."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to EmulatorState; holds no state of its own."""

    protocol_version = "HTTP/1.1"
    server_version = "AmplitudeEmulator/1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)
        self.server.state.connection_opened()

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: no per-request output."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing -------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except ConnectionError:
            self.close_connection = True  # the client went away (e.g. it timed out)
        except Exception:
            self.close_connection = True
            traceback.print_exc()
            with contextlib.suppress(OSError):
                self._send(error_reply(500, "Emulator internal error"))

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path
        state = self.server.state
        refusal = self._refusal(method, path, url.netloc)
        if refusal is not None:  # answered before reading the body; nothing is recorded
            self.close_connection = True
            self._send(refusal)
            return
        size = self._content_length()
        if size is None:
            return
        if path.startswith(_CONTROL_PREFIX):
            self._control(method, path, url.query, size)
        elif method == "POST" and path in _INGEST_ROUTES:
            endpoint = _INGEST_ROUTES[path]
            body = self._read_body(size, state.config.limits_for(endpoint).max_body_bytes)
            fault = state.pick_fault(path, body)
            if fault is None:
                self._answer(state.ingest(endpoint, path, body, size))
            else:
                self._faulted(fault, endpoint, path, body, size)
        elif method in ("GET", "POST") and path in _IDENTIFY_ROUTES:
            self._identify(method, path, url.query, size)
        elif path == DELETIONS_PATH or path.startswith(DELETIONS_PATH + "/"):
            self._deletions(method, path, url.query, size)
        else:
            self._read_body(size, 0)
            self._send(state.not_found(method, path, size))

    def _faulted(
        self, fault: FiredFault, endpoint: str, path: str, body: bytes | None, size: int
    ) -> None:
        """Apply a fault rule that fired (the body has been read)."""
        rule = fault.rule
        if rule.action == "delay" and self.server.stopping.wait(min(rule.delay_s, MAX_DELAY_S)):
            self.close_connection = True  # the server is stopping: drop the request
            return
        reply = self.server.state.ingest_faulted(endpoint, path, body, size, fault)
        if reply is None:
            self._reset_connection(graceful=rule.graceful)
        else:
            self._answer(reply)

    def _reset_connection(self, *, graceful: bool) -> None:
        """Close the connection without answering: with a TCP reset, or a plain close."""
        self.close_connection = True
        if not graceful:
            with contextlib.suppress(OSError):
                linger = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close sends RST
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()  # really closed once rfile/wfile are (in finish)

    def _identify(self, method: str, path: str, query: str, size: int) -> None:
        state = self.server.state
        body = self._read_body(size, state.config.v2.max_body_bytes)
        if body is None:
            self._answer(too_large_reply())
            return
        form = first_values(parse_qs(query, keep_blank_values=True))
        if body:
            form.update(parse_form(body, self.headers.get("Content-Type", "")))
        self._answer(state.identify(_IDENTIFY_ROUTES[path], method, path, form, size))

    def _deletions(self, method: str, path: str, query: str, size: int) -> None:
        """The User Privacy API; the project's in-flight slot is held until the answer is sent
        (after ``latency_ms``). The Authorization header is read here and never logged."""
        state = self.server.state
        body = self._read_body(size, _CONTROL_MAX_BODY)
        reply, slot = state.deletion_request(
            method, path, query, self.headers.get("Authorization"), body, size
        )
        try:
            self._answer(reply)
        finally:
            if slot is not None:
                state.deletion_finished(slot)

    def _refusal(self, method: str, path: str, netloc: str) -> Reply | None:
        """A 403 for a request not addressed to the emulator (``Host``, or the authority of
        an absolute request target) or, on the control API, from another origin; a 415 for
        a control write with a body or content type other than JSON. None: go ahead."""
        hosts = self.server.hosts
        named = self.headers.get_all("Host") or []
        if len(named) != 1 or not hosts.allows(named[0]) or (netloc and not hosts.allows(netloc)):
            return error_reply(403, ERR_HOST)
        if not path.startswith(_CONTROL_PREFIX):
            return None
        origins = self.headers.get_all("Origin") or []
        if origins:
            origin = urlsplit(origins[0].strip())
            if (len(origins) != 1 or origin.scheme != "http" or origin.path
                    or _authority(origin.netloc) != _authority(named[0])):
                return error_reply(403, ERR_ORIGIN)
        if method in _WRITE_METHODS:
            kind = self.headers.get("Content-Type")
            has_body = self.headers.get("Content-Length", "0").strip() not in ("", "0")
            if kind is not None or has_body or "Transfer-Encoding" in self.headers:
                media = (kind or "").partition(";")[0].strip().lower()
                if not (media == "application/json"
                        or (media.startswith("application/") and media.endswith("+json"))):
                    return error_reply(415, ERR_CONTENT_TYPE)
        return None

    def _content_length(self) -> int | None:
        """The declared body length; None after answering a request we cannot frame."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self._send(error_reply(411, "Length Required"))
            return None
        raw = self.headers.get("Content-Length", "0")
        try:
            size = int(raw)
        except ValueError:
            size = -1
        if size < 0:
            self.close_connection = True
            self._send(error_reply(400, "Invalid Content-Length"))
            return None
        return size

    def _read_body(self, size: int, limit: int) -> bytes | None:
        """The body, or None when it exceeds ``limit`` (then it is read and discarded)."""
        if size <= limit:
            return self.rfile.read(size) if size else b""
        remaining = size
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _DRAIN_CHUNK))
            if not chunk:
                self.close_connection = True
                break
            remaining -= len(chunk)
        return None

    def _answer(self, reply: Reply) -> None:
        """An Amplitude endpoint's answer, sent ``latency_ms`` after the request was handled.

        Only this connection's handler thread waits (one thread per connection), so requests
        on other connections overlap. A stopping server wakes it and drops the answer.
        """
        latency_ms = self.server.state.config.latency_ms
        if latency_ms and self.server.stopping.wait(latency_ms / 1000):
            self.close_connection = True
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        payload = orjson.dumps(reply.body) if reply.raw is None else reply.raw
        self._send_bytes(reply.status, payload, reply.content_type)

    def _send_bytes(
        self, status: int, payload: bytes, content_type: str = "application/json"
    ) -> None:
        """Answer with a payload, keeping the connection open unless told otherwise."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, data: Any) -> None:
        """A control-API answer (a plain JSON document, not an ingestion reply)."""
        self._send(Reply(status, data))

    # -- control API (/_emulator/) ------------------------------------------------------------

    def _control(self, method: str, path: str, query: str, size: int) -> None:
        state = self.server.state
        body = self._read_body(size, _CONTROL_MAX_BODY)
        if body is None:
            self._send(too_large_reply())
            return
        name = path[len(_CONTROL_PREFIX) :]
        params = first_values(parse_qs(query, keep_blank_values=True))
        if method == "GET" and name in ("events", "identifies"):
            self._list(name, params)
        elif method == "GET" and name == "counts":
            self._counts(params)
        elif method == "GET" and name == "requests":
            log = state.requests_log()
            self._send_json(200, {"requests": log, "count": len(log)})
        elif method == "GET" and name == "deletions":
            self._send_json(
                200, {"jobs": state.deletion_jobs(), "requests": state.deletion_requests()}
            )
        elif method == "GET" and name == "stats":
            self._send_json(200, state.stats())
        elif method == "GET" and name == "config":
            self._send_json(200, shown_config(state.config))
        elif method == "PATCH" and name == "config":
            self._patch_config(body)
        elif method == "POST" and name == "reset":
            state.reset()
            self._send_json(200, {"reset": True})
        elif name == "faults" and method in ("GET", "POST", "DELETE"):
            self._faults(method, body)
        elif name == "clock" and method in ("GET", "POST"):
            self._clock(method, body)
        else:
            self._send(error_reply(404, ERR_PATH))

    def _list(self, name: str, params: dict[str, str]) -> None:
        state = self.server.state
        if name == "identifies":
            unknown = sorted(set(params) - set(IDENTIFY_FILTERS))
            if unknown:
                self._send(error_reply(400, f"Unknown filter: {unknown[0]}"))
                return
            items = state.identifies(**params)
            self._send_json(200, {name: items, "count": len(items)})
            return
        paging = self._paging(params, EVENT_FILTERS)
        if paging is None:
            return
        filters, offset, limit = paging
        raws, total = state.event_page(offset, limit, **filters)
        more = limit > 0 and offset + len(raws) < total
        next_offset = offset + len(raws)
        query = urlencode({**filters, "limit": limit, "offset": next_offset})
        following = f"{_CONTROL_PREFIX}events?{query}" if more else None
        payload = (b'{"events":[%b],"count":%d,"total":%d,"offset":%d,"limit":%d,'
                   b'"next_offset":%b,"next":%b}') % (
            b",".join(raws), len(raws), total, offset, limit,
            b"%d" % next_offset if more else b"null", orjson.dumps(following))
        self._send_bytes(200, payload)

    def _counts(self, params: dict[str, str]) -> None:
        by = params.pop("by", "event_type")
        if by not in COUNT_KEYS:
            self._send(error_reply(400, f"by: {by!r} is not one of {', '.join(COUNT_KEYS)}"))
            return
        paging = self._paging(params, EVENT_FILTERS, offset=False)
        if paging is None:
            return
        filters, _, limit = paging
        found, without, total = self.server.state.event_counts(by, **filters)
        largest = sorted(found.items(), key=lambda item: (-item[1], item[0]))[:limit]
        self._send_json(200, {"by": by, "total": total, "without": without,
                              "distinct": len(found), "counts": dict(largest), "limit": limit})

    def _paging(
        self, params: dict[str, str], filters: tuple[str, ...], *, offset: bool = True
    ) -> tuple[dict[str, str], int, int] | None:
        """(filters, offset, limit) of a listing's query; None after answering a 400 for an
        unknown parameter or a bad value."""
        known = {*filters, "limit", *(("offset",) if offset else ())}
        unknown = sorted(set(params) - known)
        if unknown:
            self._send(error_reply(400, f"Unknown filter: {unknown[0]}"))
            return None
        values = {"limit": DEFAULT_PAGE, "offset": 0}
        for name, most in (("limit", MAX_PAGE), ("offset", None)):
            text = params.get(name)
            if text is None:
                continue
            if not (text.isascii() and text.isdigit()) or (most is not None and int(text) > most):
                upper = f" from 0 to {most:,}" if most is not None else ", 0 or more"
                self._send(error_reply(400, f"{name}: {text!r} is not a whole number{upper}"))
                return None
            values[name] = int(text)
        chosen = {k: v for k, v in params.items() if k in filters}
        return chosen, values["offset"], values["limit"]

    def _json_object(self, body: bytes, what: str) -> dict[str, Any] | None:
        """The body as a JSON object; None after answering a 400."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            self._send(error_reply(400, ERR_INVALID_JSON))
            return None
        if not isinstance(data, dict):
            self._send(error_reply(400, f"{what} must be a JSON object"))
            return None
        return data

    def _faults(self, method: str, body: bytes) -> None:
        state = self.server.state
        if method == "POST":
            document = self._json_object(body, "Faults")
            if document is None:
                return
            try:
                rules, seed = parse_fault_document(document)
            except FaultRuleError as exc:
                self._send(error_reply(400, str(exc)))
                return
            state.set_faults(rules, seed)
        elif method == "DELETE":
            state.clear_faults()
        self._send_json(200, state.faults_info())

    def _clock(self, method: str, body: bytes) -> None:
        """``{"advance_s": s}`` moves the virtual clock; ``{"mode": "real"}`` leaves it."""
        state = self.server.state
        if method == "POST":
            command = self._json_object(body, "Clock command")
            if command is None:
                return
            advance = command.get("advance_s")
            mode = command.get("mode")
            if set(command) == {"mode"} and mode in ("real", "virtual"):
                if mode == "real":
                    state.use_real_clock()
                else:
                    state.advance_clock(0)
            elif (set(command) == {"advance_s"} and isinstance(advance, (int, float))
                  and not isinstance(advance, bool) and advance >= 0):
                state.advance_clock(float(advance))
            else:
                message = 'Clock command: {"advance_s": seconds >= 0} or {"mode": "real"}'
                self._send(error_reply(400, message))
                return
        self._send_json(200, state.clock_info())

    def _patch_config(self, body: bytes) -> None:
        patch = self._json_object(body, "Config patch")
        if patch is None:
            return
        try:
            config = self.server.state.patch_config(patch)
        except (ConfigError, ValueError) as exc:
            self._send(error_reply(400, str(exc)))
            return
        self._send_json(200, shown_config(config))


# ---------------------------------------------------------------------------------------------
# Public server
# ---------------------------------------------------------------------------------------------


class Emulator:
    """The emulator server: ``with Emulator() as amp: httpx.post(amp.url + "/batch", ...)``.

    The socket is bound on construction (``port=0`` picks a free port), so ``url`` is known
    before ``start``. The emulator works on a copy of ``config``. It answers requests whose
    ``Host`` names it: ``127.0.0.1``, ``localhost``, ``[::1]`` or ``host`` with its port,
    any IP address with its port when ``host`` is every interface (``0.0.0.0``), and the
    names in ``allowed_hosts`` (e.g. ``host.docker.internal``); any other gets a 403.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        allowed_hosts: Iterable[str] = (),
    ) -> None:
        self.state = EmulatorState(config if config is not None else EmulatorConfig())
        self._server = _Server((host, port), self.state, tuple(allowed_hosts))
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``."""
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{name}:{port}"

    @property
    def config(self) -> EmulatorConfig:
        """The current config (replaced, never mutated, by PATCH /_emulator/config)."""
        return self.state.config

    def start(self) -> Self:
        """Serve in a daemon thread and return self."""
        if self._thread is None:
            self._serving = True
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": _POLL_INTERVAL_S},
                name="amplitude-emulator",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop`` (from another thread) or Ctrl-C."""
        self._serving = True
        try:
            self._server.serve_forever(poll_interval=_POLL_INTERVAL_S)
        finally:
            self._serving = False
            self._close()

    def stop(self) -> None:
        """Stop serving, drop open connections and release the port. Idempotent.

        Handlers sleeping in a ``"delay"`` fault wake at once and drop their request.
        """
        self._server.stopping.set()
        if self._serving:
            self._server.shutdown()
            self._serving = False
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._close()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._server.close_connections()
            self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def events(self, **filters: str) -> list[dict[str, Any]]:
        """Stored events (copies), optionally filtered like ``GET /_emulator/events``."""
        return self.state.events(**filters)

    def event_counts(self, by: str = "event_type", **filters: str) -> dict[str, int]:
        """Stored events per value of ``by`` (``event_type``, ``user_id`` or ``device_id``),
        as ``counts`` of ``GET /_emulator/counts``, every value."""
        return dict(self.state.event_counts(by, **filters)[0])

    def requests_log(self) -> list[dict[str, Any]]:
        """The request log (copies), API keys fingerprinted."""
        return self.state.requests_log()

    def deletion_jobs(self) -> list[dict[str, Any]]:
        """Same as ``jobs`` of ``GET /_emulator/deletions``: every project's User Privacy API
        jobs by day, each with its ``api_key`` (fingerprint), ``day``, ``status``,
        ``amplitude_ids`` and ``active_scrub_done_date``."""
        return self.state.deletion_jobs()

    def deletion_requests(self) -> list[dict[str, Any]]:
        """Same as ``requests`` of ``GET /_emulator/deletions``: every User Privacy API
        request with ``at`` (clock seconds), ``method``, ``route``, ``api_key``
        (fingerprint), ``ids`` (how many), ``user_ids``, ``amplitude_ids`` and ``status``."""
        return self.state.deletion_requests()

    def amplitude_id(self, user_id: str, api_key: str | None = None) -> int | None:
        """The amplitude id given to ``user_id`` (in ``api_key``'s project, else the first
        project that sent it); None when no event of it was stored."""
        return self.state.amplitude_id(user_id, api_key)

    def reset(self) -> None:
        """Same as ``POST /_emulator/reset``: clear all state and faults, restore the initial
        config and the real clock."""
        self.state.reset()

    def set_faults(
        self, rules: Iterable[Mapping[str, Any] | FaultRule], seed: int = 0
    ) -> dict[str, Any]:
        """Same as ``POST /_emulator/faults``: replace the fault rules, seed their RNG.

        Raises FaultRuleError (a ValueError) for a malformed rule. Returns the rules with
        their counters, like ``GET /_emulator/faults``.
        """
        self.state.set_faults(rules, seed)
        return self.state.faults_info()

    def clear_faults(self) -> None:
        """Same as ``DELETE /_emulator/faults``."""
        self.state.clear_faults()

    def faults(self) -> dict[str, Any]:
        """Same as ``GET /_emulator/faults``: the rules with ``seen``/``fired``/``remaining``."""
        return self.state.faults_info()

    def advance_clock(self, seconds: float) -> float:
        """Same as ``POST /_emulator/clock {"advance_s": seconds}``; returns the new now."""
        return self.state.advance_clock(seconds)

    def use_real_clock(self) -> None:
        """Same as ``POST /_emulator/clock {"mode": "real"}``."""
        self.state.use_real_clock()
