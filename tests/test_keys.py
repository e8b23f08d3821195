"""API keys over HTTP and on the command line: what they refuse with a 4xx (never a 500 or a traceback),
and what their revocation reaches: everything the key owns (api/store/keys.py, api/store/watches.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.errors import WatchNotFoundError
from api.store.keys import KeyRing
from api.store.records import Found
from api.store.standing import WatchTables
from tests.servers import rag, rag_env, until
from tests.test_watches import LIGHT, LIGHTHOUSE

PROBLEM = "application/problem+json"


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_revoking_a_key_stops_its_watches_unless_they_are_kept(
    keyed_client: tuple[TestClient[Litestar], dict[str, str]],
) -> None:
    client, tokens = keyed_client
    made = {
        name: client.post("/watches", json={"question": LIGHTHOUSE}, headers=_auth(tokens[name])).json()
        for name in ("alice", "bob", "carol")
    }
    boss = _auth(tokens["boss"])
    assert client.delete("/keys/alice", headers=boss).status_code == 204
    assert client.delete("/keys/bob", params={"keep_watches": "true"}, headers=boss).status_code == 204
    stopped = client.get(f"/watches/{made['alice']['id']}", headers=boss).json()
    assert stopped["active"] is False
    assert client.get(f"/watches/{made['bob']['id']}", headers=boss).json()["active"] is True
    assert client.get(made["alice"]["feed_url"]).status_code == 404
    assert client.get(made["bob"]["feed_url"]).status_code == 200

    # The story comes: the kept watch and the live key's watch are told (one reading of the article);
    # the stopped one, matched in the same check, is not.
    assert client.post("/articles", json=LIGHT, headers=boss).status_code == 200

    def told(name: str) -> int:
        alerts: int = client.get(f"/watches/{made[name]['id']}", headers=boss).json()["alerts"]
        return alerts

    until(lambda: told("carol") and told("bob"))
    assert told("alice") == 0


def test_a_revoked_keys_watch_neither_matches_nor_delivers_nor_serves_its_feed(tmp_path: Path) -> None:
    """At the store: what the matcher reads, what the webhook worker claims, when it next wakes, and the
    feed, before and after the owner's revocation (read from the key table each time: every process
    sees it at once)."""
    path = tmp_path / "service.sqlite"
    ring, store = KeyRing(path), WatchTables.open(path)
    try:
        ring.add("alice", "watch")
        made = store.watches.add(LIGHTHOUSE, "alice", webhook="https://hooks.example.com/news")
        store.alerts.advance(None, 0, [])
        found = Found(made.watch.id, "story-1", "article-1", {"answer": "It opens on 1 June [1]."}, 0.9)
        assert len(store.alerts.advance(0, 10, [found]) or []) == 1
        version = store.watches.version()
        assert [q.id for q in store.watches.questions()] == [made.watch.id]
        assert store.outbox.next_due() is not None
        assert store.watches.feed_watch(made.watch.id, made.feed_token).id == made.watch.id

        ring.revoke("alice")
        assert store.watches.version() != version  # the matcher reads its watches again
        assert store.watches.questions() == []
        assert store.outbox.pending(time.time() + 3600) == []  # the pending webhook is not sent
        assert store.outbox.next_due() is None  # and the webhook worker does not spin on it
        with pytest.raises(WatchNotFoundError):
            store.watches.feed_watch(made.watch.id, made.feed_token)
        later = Found(made.watch.id, "story-2", "article-2", {"answer": "Still 1 June [1]."}, 0.9)
        assert store.alerts.advance(10, 20, [later]) == []  # matched before the revocation: dropped
        assert store.watches.get(made.watch.id).active is False
    finally:
        store.close()
        ring.close()


def test_unusable_origins_and_alert_pages_are_4xx_problems(
    keyed_client: tuple[TestClient[Litestar], dict[str, str]],
) -> None:
    client, tokens = keyed_client
    boss = _auth(tokens["boss"])
    for origin in ("http://[::1", "http://a.example:99999", "javascript:alert(1)"):
        refused = client.post(
            "/keys", json={"name": "widget", "scope": "ask", "origins": [origin]}, headers=boss
        )
        assert refused.status_code == 422, (origin, refused.text)
        assert refused.headers["content-type"].startswith(PROBLEM)
        assert "is not an http(s) address" in refused.json()["detail"]
    watch = client.post("/watches", json={"question": LIGHTHOUSE}, headers=boss).json()
    for before in ("-1000000000000000000000000000000", "0", "-1"):
        page = client.get(f"/watches/{watch['id']}/alerts", params={"before": before}, headers=boss)
        assert page.status_code == 400, (before, page.text)
        assert page.headers["content-type"].startswith(PROBLEM)
    huge = client.get(f"/watches/{watch['id']}/alerts", params={"before": "9" * 40}, headers=boss)
    assert huge.status_code == 200
    assert huge.json()["alerts"] == []


@pytest.mark.slow
def test_the_keys_command_line_refuses_a_bad_origin_and_keeps_watches_when_told(
    tmp_path: Path, tiktoken_dir: Path
) -> None:
    env = rag_env(tmp_path / "data", tiktoken_dir)
    bad = rag("keys", "add", "widget", "--scope", "ask", "--origin", "http://[::1", env=env)
    assert bad.returncode == 2
    assert "is not an http(s) address" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert rag("keys", "add", "alice", "--scope", "watch", env=env).returncode == 0
    assert rag("keys", "add", "bob", "--scope", "watch", env=env).returncode == 0
    stopped = rag("keys", "revoke", "alice", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert "its watches stop with it" in stopped.stdout
    kept = rag("keys", "revoke", "bob", "--keep-watches", env=env)
    assert kept.returncode == 0, kept.stderr
    assert "its watches go on" in kept.stdout
