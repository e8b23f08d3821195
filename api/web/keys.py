"""The API keys over HTTP, for admin keys (``GET /keys``, ``POST /keys``, ``DELETE /keys/{name}``), as
`rag keys` does on the command line. Every worker reads keys from service.sqlite on each request, so a
key revoked through one worker is refused by all of them at once."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, delete, get, post
from litestar.params import FromPath, JSONBody, Parameter
from litestar.status_codes import HTTP_204_NO_CONTENT

from api.errors import KeyInUseError, KeyRefusedError, KeyTakenError
from api.store.keys import ApiKey
from api.store.protocols import KeyStore
from api.web.context import service_of
from api.web.doors import ADMIN, guarded
from api.web.problems import problems
from index.errors import ConfigError

KeyName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._-]{1,64}$")]


class KeyIn(msgspec.Struct, forbid_unknown_fields=True):
    name: KeyName
    scope: Literal["ask", "watch", "admin"]
    """ask: questions; watch: also standing questions; admin: also writes and keys."""
    origins: Annotated[list[Annotated[str, msgspec.Meta(max_length=300)]], msgspec.Meta(max_length=50)] = []
    """Web page origins allowed to use the key from a browser."""
    per_minute: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] | None = None
    per_day: Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)] | None = None


class KeyOut(msgspec.Struct):
    name: str
    scope: str
    prefix: str
    """The token's first characters, to tell keys apart."""
    origins: list[str]
    per_minute: int | None
    per_day: int | None
    created_at: str
    revoked_at: str | None
    token: str | None = None
    """The key itself: shown once, when it is made."""


def key_out(key: ApiKey, token: str | None = None) -> KeyOut:
    return KeyOut(
        key.name,
        key.scope,
        key.prefix,
        list(key.origins),
        key.per_minute,
        key.per_day,
        key.created_at,
        key.revoked_at,
        token,
    )


def _keys(request: Request[Any, Any, Any]) -> KeyStore:
    return service_of(request).door.keys


@get(
    "/keys",
    sync_to_thread=True,
    responses=problems(400),
    summary="Every API key, revoked ones included (never their tokens)",
)
def list_keys(request: Request[Any, Any, Any]) -> list[KeyOut]:
    ring = _keys(request)
    return [key_out(k) for k in ring.keys()]  # noqa: SIM118 - a KeyStore, not a dict


@post(
    "/keys",
    sync_to_thread=True,
    status_code=201,
    responses=problems(400, 409, 413, 415, 422),
    summary="Make a key; its token is in this answer only",
)
def add_key(request: Request[Any, Any, Any], data: JSONBody[KeyIn]) -> KeyOut:
    ring = _keys(request)
    try:
        token = ring.add(data.name, data.scope, data.origins, data.per_minute, data.per_day)
    except KeyTakenError:
        raise
    except ConfigError as exc:
        raise KeyRefusedError(str(exc)) from None
    (made,) = [k for k in ring.active() if k.name == data.name]
    return key_out(made, token)


@delete(
    "/keys/{name:str}",
    sync_to_thread=True,
    status_code=HTTP_204_NO_CONTENT,
    responses=problems(400, 404, 409),
    summary="Revoke a key: every worker refuses it from the next request on, and its watches stop",
    description="409 for the key the request is made with: revoke it with another admin key, or with "
    "`rag keys revoke NAME`.",
)
def revoke_key(
    request: Request[Any, Any, Any],
    name: FromPath[KeyName],
    keep_watches: Annotated[
        bool, Parameter(description="its watches go on (by default they stop with the key)")
    ] = False,
) -> None:
    caller: ApiKey | None = request.state.get("api_key")
    if caller is not None and caller.name == name:
        raise KeyInUseError("a key cannot revoke itself; use another admin key or `rag keys revoke`")
    _keys(request).revoke(name, keep_watches=keep_watches)


ROUTES = [guarded(ADMIN, list_keys, add_key, revoke_key)]
