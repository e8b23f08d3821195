"""A small real web site on 127.0.0.1 for tests: news pages and feeds, every request logged."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

Reply = tuple[int, dict[str, str], bytes]


@dataclass
class Site:
    """A small web site: path -> reply, every request logged."""

    routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], Reply]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)
    base: str = ""

    def page(self, path: str, body: bytes, etag: str | None = None, kind: str = "text/html") -> None:
        def reply(handler: http.server.BaseHTTPRequestHandler) -> Reply:
            headers = {"Content-Type": kind}
            if etag:
                headers["ETag"] = etag
                if handler.headers.get("If-None-Match") == etag:
                    return 304, headers, b""
            return 200, headers, body

        self.routes[path] = reply

    def requests_to(self, path: str) -> int:
        return self.log.count(path)


@contextmanager
def serve_site() -> Iterator[Site]:
    served = Site()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.log.append(self.path)
            route = served.routes.get(self.path)
            status, headers, body = route(self) if route else (404, {}, b"not here")
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if status != 304:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.base = f"http://127.0.0.1:{server.server_port}"
    yield served
    server.shutdown()
    server.server_close()


def article_page(title: str, text: str) -> bytes:
    """A news page as sites serve them: the story wrapped in navigation, a cookie banner, related links
    and a footer."""
    return f"""<!doctype html><html><head><title>{title} | Harbour Times</title>
<meta name="author" content="Ann Lee"></head><body>
<nav><a href="/">Home</a> | <a href="/world">World</a> | <a href="/sport">Sport</a></nav>
<div class="cookie-banner">We use cookies to improve your experience. Accept all cookies</div>
<article><h1>{title}</h1><p>{text}</p>
<p>The plan was first proposed in 2019 and has been debated at every council meeting since then.</p></article>
<aside class="related"><h3>Related stories</h3>
<ul><li><a href="/x">Ferry fares rise again</a></li></ul></aside>
<footer>Copyright 2024 Harbour Times. All rights reserved. Privacy policy. Terms of use.</footer>
</body></html>""".encode()


def rss(site: Site, items: list[tuple[str, str, str]]) -> bytes:
    body = "".join(
        f"<item><title>{t}</title><link>{site.base}{path}</link><pubDate>{when}</pubDate>"
        f"<description>{t}: the feed's own summary.</description></item>"
        for path, t, when in items
    )
    channel = f"<channel><title>Harbour Times</title>{body}</channel>"
    return f'<?xml version="1.0"?><rss version="2.0">{channel}</rss>'.encode()
