"""The door to the network for feeds: what the service fetches by itself, politely and within bounds.

httpx does the HTTP; this adds what a crawler that runs unattended must not do without: only http(s);
every address the name resolves to, and the address actually connected to, public (``is_public``: one
rule for feeds, pages and webhooks) unless an operator lists the network (``RAG_FEEDS_ALLOW_NETWORKS``);
redirects followed by hand, at most five, each checked again; timeouts on connect and read, and a deadline
on the whole request (a server that sends a byte a second never trips a read timeout); a cap on the
bytes read, counted after gzip or deflate is undone (a small gzip bomb inflates no further than the cap);
conditional requests (ETag, Last-Modified); robots.txt; one request at a time per host with a delay; and a
User-Agent that names the service. Whatever goes wrong (a refused address, a redirect to ``javascript:``, an
address httpx cannot send, a broken stream) comes out as one FetchError with the reason.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
import urllib.robotparser
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urljoin, urlsplit

import httpx

from index.errors import InputError
from index.urls import MAX_URL_CHARS

USER_AGENT = "newsrag-feeds/0.1 (a news question-answering service following its feeds)"
Networks = Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
ROBOTS_SECONDS = 3600.0
"""How long a site's robots.txt is believed before it is read again."""


_NOT_GLOBAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        # What Python 3.11's is_global still calls global (later releases fixed most of these).
        "192.0.0.0/24",  # IETF protocol assignments (NAT64 discovery, DS-Lite, PCP anycast...)
        "192.88.99.0/24",  # the deprecated 6to4 relay anycast
        "64:ff9b:1::/48",  # NAT64 for local use (RFC 8215)
        "fec0::/10",  # deprecated site-local
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``address`` is reachable on the public internet and only there: the standard library's
    globality (``is_global``: not private, shared (100.64/10, where cloud metadata services live),
    loopback, link-local, reserved, documentation...), minus what Python 3.11 still lets through, and
    never multicast. An IPv6 address that carries an IPv4 one (IPv4-mapped, IPv4-compatible, 6to4,
    Teredo, NAT64's well-known prefix) is judged by the IPv4 address it reaches."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
    if address.is_multicast or any(address in network for network in _NOT_GLOBAL):
        return False
    return address.is_global


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client the relay forwards to
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class FetchError(InputError):
    """A fetch refused or failed, with the reason (no stack trace, no local path)."""


DEFAULT_HOST_DELAY_SECONDS = 1.0
"""The pause between two requests to one host."""


@dataclass(frozen=True)
class Limits:
    """Bounds on every fetch."""

    max_bytes: int = 5_000_000
    """Bytes of a response body after decompression."""
    connect_seconds: float = 5.0
    read_seconds: float = 10.0
    total_seconds: float = 60.0
    """The whole of one fetch, redirects included: its connection is cut when the time is up."""
    max_redirects: int = 5
    host_delay_seconds: float = DEFAULT_HOST_DELAY_SECONDS
    """Pause between two requests to the same host."""


@dataclass(frozen=True)
class Fetched:
    """A response: 200 with its body, or 304 (nothing changed since the validators given)."""

    url: str
    """The address answered, after redirects."""
    status: int
    body: bytes
    etag: str | None
    last_modified: str | None
    content_type: str
    charset: str | None = None
    """The charset the Content-Type header declares, if any."""


class _Deadline:
    """Cuts a request's connection when its time is up. httpx's timeouts bound each connect and each read,
    not a whole request, and it has no overall deadline, so a server that sends a byte at a time holds a
    fetch for as long as it likes. The socket is taken from httpcore's trace of the connection (every
    request opens its own: the client keeps none alive) and shut down by a timer, which ends any read
    blocked on it; the request then fails and is reported as over time."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self.peer_check: Callable[[str], None] | None = None
        """Told the address connected to; raises to stop the request before it is sent."""
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._cut)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, object]) -> None:
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            found = getattr(stream, "get_extra_info", lambda _: None)("socket")
            with self._lock:
                self._socket = found if isinstance(found, socket.socket) else None
                expired = self.expired
            if expired:
                self._cut()
            if self.peer_check is not None and isinstance(found, socket.socket):
                # The address actually connected to, before a byte of the request is sent: a name that
                # resolves to a public address when checked and to an internal one when connected
                # (DNS rebinding) gets nothing.
                try:
                    peer = found.getpeername()
                except OSError:
                    return
                self.peer_check(str(peer[0]))

    def _cut(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is not None:
                with contextlib.suppress(OSError):  # closed already
                    self._socket.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


class Fetcher:
    """Fetches http(s) resources within ``limits``; refuses addresses outside ``allow`` that are not public.
    One per poller; thread-safe (one request at a time per host)."""

    def __init__(
        self, allow: Networks = (), limits: Limits | None = None, user_agent: str = USER_AGENT
    ) -> None:
        self.limits = limits or Limits()
        self._allow = tuple(allow)
        self._client = httpx.Client(
            follow_redirects=False,
            timeout=httpx.Timeout(self.limits.read_seconds, connect=self.limits.connect_seconds),
            limits=httpx.Limits(max_keepalive_connections=0),  # a connection per request: see _Deadline
            headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate"},
            trust_env=False,
        )
        self._user_agent = user_agent
        self._robots: dict[str, tuple[float, urllib.robotparser.RobotFileParser | None]] = {}
        self._last: dict[str, float] = {}
        self._hosts: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.requests = 0
        """Requests sent so far (robots.txt included)."""

    def close(self) -> None:
        self._client.close()

    def check_address(self, url: str) -> None:
        """Raise FetchError unless ``url`` is http(s) and every address its host resolves to is allowed."""
        parts = _split(url)
        host = parts.hostname or ""
        try:
            infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError(f"{host}: the name does not resolve ({exc})") from None
        for info in infos:
            self._check_ip(host, str(info[4][0]))

    def get(self, url: str, etag: str | None = None, last_modified: str | None = None) -> Fetched:
        """GET ``url`` (conditionally when validators are given), following redirects within the limits."""
        deadline = time.monotonic() + self.limits.total_seconds
        for _ in range(self.limits.max_redirects + 1):
            self.check_address(url)
            if not self._robots_allow(url):
                raise FetchError(f"{url}: disallowed by the site's robots.txt")
            headers = {}
            if etag:
                headers["If-None-Match"] = etag
            if last_modified:
                headers["If-Modified-Since"] = last_modified
            answer = self._request(url, headers, deadline)
            if isinstance(answer, str):
                url = answer
                continue
            return answer
        raise FetchError(f"{url}: more than {self.limits.max_redirects} redirects")

    def _request(self, url: str, headers: dict[str, str], deadline: float) -> Fetched | str:
        """One request: the response, or the address a redirect points to."""
        host = host_key(url)  # checked by check_address already
        shown = _shown(url)
        with self._host_lock(host):
            self._wait_turn(host)
            cut = _Deadline(deadline - time.monotonic())
            cut.peer_check = lambda address: self._check_ip(host, address)
            try:
                with self._client.stream(
                    "GET", url, headers=headers, extensions={"trace": cut.trace}
                ) as response:
                    self.requests += 1
                    self._check_peer(host, response)
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        return urljoin(url, response.headers["location"])
                    if response.status_code == 304:
                        return self._fetched(url, response, b"")
                    if response.status_code >= 400:
                        raise FetchError(f"{shown}: HTTP {response.status_code}")
                    body = self._read(shown, response, cut)
                    if cut.expired:  # a body read to a close the deadline forced is not the page
                        raise httpx.ReadTimeout("cut at the deadline")
                    return self._fetched(url, response, body)
            except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, ValueError) as exc:
                # InvalidURL and StreamError are not HTTPErrors; ValueError covers a header or address
                # the standard library refuses. None of them may escape as anything but a FetchError.
                raise self._failure(shown, exc, cut) from None
            finally:
                cut.cancel()
                self._last[host] = time.monotonic()

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body`` to ``url`` under the same rules (the address checked before and at the connection,
        the deadline); redirects are not followed (a webhook answers where it is). Returns the status."""
        self.check_address(url)
        host = host_key(url)
        shown = _shown(url)
        cut = _Deadline(self.limits.total_seconds)
        cut.peer_check = lambda address: self._check_ip(host, address)
        try:
            with self._client.stream(
                "POST", url, content=body, headers=headers, extensions={"trace": cut.trace}
            ) as response:
                self.requests += 1
                self._check_peer(host, response)
                return response.status_code
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, ValueError) as exc:
            raise self._failure(shown, exc, cut) from None
        finally:
            cut.cancel()

    def _failure(self, shown: str, exc: Exception, cut: _Deadline) -> FetchError:
        """What an httpx failure says, as one FetchError."""
        if cut.expired:
            return FetchError(f"{shown}: took longer than {self.limits.total_seconds:g} s in all")
        if isinstance(exc, httpx.TimeoutException):
            return FetchError(f"{shown}: timed out")
        if isinstance(exc, httpx.InvalidURL):
            return FetchError(
                f"{shown}: httpx cannot send this address or follow its redirect ({str(exc)[:200]})"
            )
        return FetchError(f"{shown}: {type(exc).__name__}: {str(exc)[:300]}")

    def _read(self, url: str, response: httpx.Response, cut: _Deadline) -> bytes:
        cap = self.limits.max_bytes
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise FetchError(f"{url}: {declared} bytes, over the limit of {cap}")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():  # decompressed: the cap bounds what gzip inflates to
            if cut.expired:
                break
            size += len(chunk)
            if size > cap:
                raise FetchError(f"{url}: over the limit of {cap} bytes (after decompression)")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _fetched(url: str, response: httpx.Response, body: bytes) -> Fetched:
        declared = response.headers.get("content-type", "")
        return Fetched(
            url=url,
            status=response.status_code,
            body=body,
            etag=response.headers.get("etag"),
            last_modified=response.headers.get("last-modified"),
            content_type=declared.split(";")[0].strip().lower(),
            charset=response.charset_encoding,
        )

    def _check_peer(self, host: str, response: httpx.Response) -> None:
        """The address actually connected to, checked again (a name may resolve differently the second
        time it is looked up)."""
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if peer:
            self._check_ip(host, str(peer[0]))

    def _check_ip(self, host: str, raw: str) -> None:
        address = ipaddress.ip_address(raw.split("%", 1)[0])
        if any(address in network for network in self._allow):
            return
        if not is_public(address):
            raise FetchError(
                f"{host}: {address} is not a public address; list its network in RAG_FEEDS_ALLOW_NETWORKS "
                "to follow feeds there"
            )

    def _robots_allow(self, url: str) -> bool:
        parts = _split(url)
        if parts.path == "/robots.txt":
            return True
        root = f"{parts.scheme}://{parts.netloc}"
        known = self._robots.get(root)
        if known is None or time.monotonic() - known[0] > ROBOTS_SECONDS:
            known = (time.monotonic(), self._load_robots(root))
            self._robots[root] = known
        rules = known[1]
        return rules is None or rules.can_fetch(self._user_agent, url)

    def _load_robots(self, root: str) -> urllib.robotparser.RobotFileParser | None:
        """The site's rules; None (everything allowed) when it has no robots.txt."""
        try:
            fetched = self.get(f"{root}/robots.txt")
        except FetchError:
            return None
        rules = urllib.robotparser.RobotFileParser()
        rules.parse(fetched.body.decode("utf-8", "replace").splitlines())
        return rules

    def _host_lock(self, host: str) -> threading.Lock:
        with self._lock:
            return self._hosts.setdefault(host, threading.Lock())

    def _wait_turn(self, host: str) -> None:
        last = self._last.get(host)
        if last is not None:
            pause = self.limits.host_delay_seconds - (time.monotonic() - last)
            if pause > 0:
                time.sleep(pause)


def host_key(url: str) -> str:
    """The host (and port) an address reaches, lowercased: what the fetcher takes turns by, and what the
    feed worker and the webhook sender keep to one request at a time (the address itself when unreadable)."""
    try:
        return urlsplit(url).netloc.lower() or url
    except ValueError:
        return url


def _shown(url: str) -> str:
    """An address as a reason shows it: cut to a readable length."""
    return url if len(url) <= 300 else f"{url[:300]}... ({len(url)} characters)"


def _split(url: str) -> SplitResult:
    if len(url) > MAX_URL_CHARS:
        raise FetchError(f"{_shown(url)}: an address over {MAX_URL_CHARS} characters is not fetched")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError as exc:
        raise FetchError(f"{url[:200]!r} is not an address ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"{url[:200]!r}: only http(s) addresses are fetched")
    return parts


def parse_networks(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``RAG_FEEDS_ALLOW_NETWORKS``: comma-separated CIDRs."""
    out = []
    for item in value.split(","):
        if item.strip():
            try:
                out.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as exc:
                raise FetchError(
                    f"RAG_FEEDS_ALLOW_NETWORKS: {item.strip()!r} is not a network ({exc})"
                ) from None
    return out
