"""Article addresses in one canonical, escaped form: what is stored, shown, linked and hashed into ids.

The path, query and fragment are normalised by courlan (trafilatura's URL library: percent-escaping,
sorted query, tracking parameters dropped, default ports removed). courlan does not judge the host or
the port, so that is done here: an address that ``urllib.parse`` cannot split, that is not http(s),
whose host is not a name or an IP address, or whose port is out of range is refused. Credentials in an
address (``user:password@``) are dropped: a citation must never show them.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit, urlunsplit

from courlan import normalize_url

from index.errors import InputError

MAX_URL_CHARS = 2000
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# Left in an address after normalising, any of these could end an HTML attribute or start markup.
_UNSAFE = re.compile(r"[\s\"'<>`\\\x00-\x1f\x7f-\x9f]")


class AddressError(InputError):
    """An address that cannot be stored; the message says why, for a person."""


def canonical_url(value: str) -> str:
    """``value`` as a canonical http(s) address; raises AddressError with the reason."""
    text = value.strip()
    if not text:
        raise AddressError("the address is empty")
    if len(text) > MAX_URL_CHARS:
        raise AddressError(f"the address is longer than {MAX_URL_CHARS} characters")
    if any(c.isspace() for c in text):
        raise AddressError("the address contains spaces")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:  # "http://[" and its like; a port such as ":99999" or ":abc"
        raise AddressError(f"the address cannot be read ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise AddressError("the address must start with http:// or https://")
    host = _host(parts.hostname or "")
    default = {"http": 80, "https": 443}[scheme]
    netloc = host if port in {None, default} else f"{host}:{port}"
    url = normalize_url(urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment)))
    if _UNSAFE.search(url):
        raise AddressError("the address holds characters that cannot be escaped")
    return url


def _host(name: str) -> str:
    """A lowercased host name (IDNA-checked) or a literal IP address, bracketed for IPv6."""
    if not name:
        raise AddressError("the address has no host")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    host = name.lower().rstrip(".")
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise AddressError(f"the host {name!r} is not a valid name") from None
    if not all(_LABEL.match(label) for label in ascii_host.split(".")):
        raise AddressError(f"the host {name!r} is not a valid name")
    return host
