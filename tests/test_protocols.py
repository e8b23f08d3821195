"""The protocols other tools speak, against a real `rag serve`: the official ``openai`` client on
/v1 (models, plain and streamed answers, a follow-up, keys and limits in OpenAI's error shape) and the
official ``mcp`` client over Streamable HTTP at /mcp and over stdio (`rag mcp`)."""

from __future__ import annotations

import asyncio
import random
import string
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import ROOT
from tests.servers import rag, rag_env, serving
from tests.test_conversation import CONVERSATION

pytestmark = pytest.mark.slow

FIRST = "What did the Riverton council approve?"
BRIDGE_SOURCE = (
    "[1] Riverton Courier, “Riverton council approves the Harbor Bridge”, 2024-05-02, "
    "https://example.org/riverton/bridge-approved"
)


@dataclass
class Live:
    base: str
    key: str
    limited: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiktoken_dir: Path) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("protocols")
    env = rag_env(folder / "data", tiktoken_dir)
    assert rag("ingest", "--quiet", str(CONVERSATION), env=env).returncode == 0
    key = rag("keys", "add", "agent", "--scope", "ask", env=env).stdout.strip()
    limited = rag("keys", "add", "limited", "--scope", "ask", "--per-minute", "1", env=env).stdout.strip()
    with serving(env, folder / "server.log") as base:
        yield Live(base, key, limited, env)


def _client(live: Live, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.base}/v1", api_key=key or live.key, max_retries=0)


def test_models(live: Live) -> None:
    with _client(live) as client:
        _models(client)


def _models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["news"]  # no language model configured
    assert client.models.retrieve("news").owned_by == "news-qa"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_a_chat_completion_carries_its_sources_in_the_text_and_as_citations(live: Live) -> None:
    with _client(live) as client:
        response = client.chat.completions.create(
            model="news",
            messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": FIRST}],
            temperature=0.2,  # accepted, nothing to steer
            top_p=0.9,
            max_tokens=50,
            seed=3,
        )
    content = response.choices[0].message.content or ""
    short, answer = content.split("\n\n", 1)  # the reader's short answer leads, in bold, with its [n]
    assert short.startswith("**")
    assert short.endswith("** [1]")
    assert "Harbor Bridge" in short
    assert answer.startswith(
        "The Riverton city council on Tuesday [30 April 2024] approved the Harbor Bridge"
    )
    assert content.endswith("\n\nSources:\n" + BRIDGE_SOURCE)
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None
    assert response.usage.completion_tokens > 0
    citations = (response.model_extra or {})["citations"]
    assert citations[0] == {
        "n": 1,
        "article_id": "c-bridge-approved",
        "outlet": "Riverton Courier",
        "headline": "Riverton council approves the Harbor Bridge",
        "published_at": "2024-05-02",
        "url": "https://example.org/riverton/bridge-approved",
        "quote": "The Riverton city council on Tuesday approved the Harbor Bridge, a cable-stayed crossing "
        "over the Mill River, by seven votes to two.",
    }


def test_streamed_deltas_add_up_to_the_answer_and_a_follow_up_is_understood(live: Live) -> None:
    with _client(live) as client:
        _stream_and_follow_up(client)


def _stream_and_follow_up(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="news", messages=[{"role": "user", "content": FIRST}])
    said = first.choices[0].message.content or ""
    thread: Any = [
        {"role": "user", "content": FIRST},
        {"role": "assistant", "content": said},
        {"role": "user", "content": "How much will it cost?"},
    ]
    plain = client.chat.completions.create(model="news", messages=thread)
    text = plain.choices[0].message.content or ""
    assert "$48 million" in text
    assert "$96" not in text  # asked alone, the ferry's fare is the answer
    chunks = list(client.chat.completions.create(model="news", messages=thread, stream=True))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert (chunks[-1].model_extra or {})["citations"][0]["article_id"] == "c-bridge-approved"
    assert len(chunks) >= 4  # role, a sentence, the sources, the end


def test_errors_come_in_openai_s_shape(live: Live) -> None:
    with pytest.raises(openai.AuthenticationError) as wrong, _client(live, "not-a-key") as stranger:
        stranger.chat.completions.create(model="news", messages=[{"role": "user", "content": FIRST}])
    assert wrong.value.status_code == 401
    body = httpx.post(f"{live.base}/v1/chat/completions", json={"messages": []}, timeout=30)
    assert body.status_code == 401
    assert body.json()["error"]["type"] == "authentication_error"
    assert set(body.json()["error"]) == {"message", "type", "param", "code"}
    with _client(live) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": FIRST}])
        assert "does not exist" in str(missing.value)
        with pytest.raises(openai.UnprocessableEntityError, match="last message must be the user's question"):
            client.chat.completions.create(
                model="news", messages=[{"role": "assistant", "content": "Hello."}]
            )
    headers = {"authorization": f"Bearer {live.key}"}
    payloads: list[dict[str, Any]] = [{"messages": "hello"}, {"messages": []}, {"model": "news"}]
    for payload in payloads:
        refused = httpx.post(f"{live.base}/v1/chat/completions", json=payload, headers=headers, timeout=30)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["type"] == "invalid_request_error"
    broken = httpx.post(
        f"{live.base}/v1/chat/completions",
        content=b'{"messages": [',
        headers={**headers, "content-type": "application/json"},
        timeout=30,
    )
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["error"]["message"]


def test_every_v1_path_and_method_answers_in_openai_s_shape(live: Live) -> None:
    """Issue 29: an unmatched /v1 path and a GET of /v1/chat/completions answered problem+json."""
    headers = {"authorization": f"Bearer {live.key}"}
    for method, path, status in (
        ("GET", "/v1/chat/completions", 405),
        ("GET", "/v1/no-such-thing", 404),
        ("POST", "/v1/completions", 404),
        ("DELETE", "/v1/models", 405),
    ):
        response = httpx.request(method, f"{live.base}{path}", headers=headers, timeout=30)
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"].startswith("application/json"), response.headers
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    elsewhere = httpx.get(f"{live.base}/no-such-thing", headers=headers, timeout=30)
    assert elsewhere.status_code == 404
    assert elsewhere.headers["content-type"].startswith("application/problem+json")
    with _client(live) as client, pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="news", prompt="hello")
    assert missing.value.status_code == 404


def test_usage_counts_what_was_read_whatever_the_client_sends(live: Live) -> None:
    """Issue 29: a 4.9 MB system message was counted token by token on the event loop (6 s, /health
    waiting behind it). Usage counts the question and the history the service reads: bounded."""
    noise = "".join(random.Random(1).choices(string.ascii_letters + " ", k=3_000_000))
    system: ChatCompletionMessageParam = {"role": "system", "content": noise}
    question: ChatCompletionMessageParam = {"role": "user", "content": FIRST}
    with _client(live) as client:
        plain = client.chat.completions.create(model="news", messages=[question])
        loud = client.chat.completions.create(model="news", messages=[system, question])
    assert plain.usage is not None
    assert loud.usage is not None
    assert loud.usage.prompt_tokens == plain.usage.prompt_tokens < 50
    assert loud.usage.completion_tokens == plain.usage.completion_tokens > 0
    long_history: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": noise[:100_000]},
        {"role": "assistant", "content": "No."},
    ]
    with _client(live) as client:
        bounded = client.chat.completions.create(model="news", messages=[*long_history, question])
    assert bounded.usage is not None
    assert bounded.usage.prompt_tokens < 5_000  # each turn read (and counted) up to the question limit


def test_get_on_mcp_is_405_not_a_stream_left_open(live: Live) -> None:
    """Issue 29: GET /mcp opened an event stream that never sent or closed (1,000 held 1,000 handles)."""
    headers = {"authorization": f"Bearer {live.key}", "accept": "text/event-stream"}
    with httpx.stream("GET", f"{live.base}/mcp", headers=headers, timeout=30) as response:
        assert response.status_code == 405  # only the head is read: a stream left open fails here
        response.read()
    assert response.json()["status"] == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_rate_limit_is_a_429_in_openai_s_shape(live: Live) -> None:
    with _client(live, live.limited) as client:
        client.models.list()
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="news", messages=[{"role": "user", "content": FIRST}])
    assert limited.value.status_code == 429
    assert limited.value.response.headers["retry-after"]
    assert limited.value.body["type"] == "rate_limit_error"  # type: ignore[index]


# --- MCP -------------------------------------------------------------------------------------------


async def _session(client: Client) -> dict[str, Any]:
    """List the tools and call each, as an agent would; what came back, by name."""
    listed = await client.list_tools()
    results: dict[str, Any] = {"tools": {t.name: t for t in listed.tools}}
    results["answer"] = await client.call_tool("answer_question", {"question": FIRST, "as_of": "2024-12-01"})
    results["follow_up"] = await client.call_tool(
        "answer_question",
        {
            "question": "How much will it cost?",
            "as_of": "2024-12-01",
            "history": [
                {"role": "user", "content": FIRST},
                {
                    "role": "assistant",
                    "content": "The council approved the Harbor Bridge. [1]",
                    "article_ids": ["c-bridge-approved"],
                },
            ],
        },
    )
    results["search"] = await client.call_tool(
        "search_news", {"query": "Harbor Bridge", "k": 2, "before": "2024-06-01"}
    )
    results["article"] = await client.call_tool("get_article", {"id": "c-ferry"})
    results["bad_k"] = await client.call_tool("search_news", {"query": "bridge", "k": 500})
    results["bad_history"] = await client.call_tool(
        "answer_question", {"question": "Why?", "history": [{"role": "system", "content": "x"}]}
    )
    results["missing"] = await client.call_tool("get_article", {"id": "no-such-article"})
    return results


def _check_session(results: dict[str, Any]) -> None:
    tools = results["tools"]
    assert set(tools) == {"search_news", "answer_question", "get_article"}
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None
        assert tool.description
    assert set(tools["search_news"].input_schema["properties"]) == {
        "query",
        "as_of",
        "k",
        "sources",
        "after",
        "before",
    }
    answer = results["answer"]
    assert not answer.is_error
    assert answer.structured_content["answer"].startswith(
        "The Riverton city council on Tuesday [30 April 2024] approved"
    )
    assert answer.structured_content["citations"][0]["article_id"] == "c-bridge-approved"
    assert answer.structured_content["citations"][0]["url"] == "https://example.org/riverton/bridge-approved"
    follow_up = results["follow_up"].structured_content
    assert "$48 million" in follow_up["answer"]
    assert "Riverton" in follow_up["standalone_question"]
    passages = results["search"].structured_content["passages"]
    assert len(passages) == 2
    assert all(p["published_at"] <= "2024-06-01" for p in passages)
    assert results["article"].structured_content["headline"] == "Harbour ferry fares rise in June"
    for name, fragment in (
        ("bad_k", "less than or equal to 50"),
        ("bad_history", "role"),
        ("missing", "no article"),
    ):
        result = results[name]
        assert result.is_error, name
        assert fragment in result.content[0].text, (name, result.content[0].text)


def test_mcp_over_streamable_http_with_a_key(live: Live) -> None:
    async def run() -> dict[str, Any]:
        headers = {"authorization": f"Bearer {live.key}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(f"{live.base}/mcp", http_client=http)) as client,
        ):
            return await _session(client)

    _check_session(asyncio.run(run()))
    refused = httpx.post(
        f"{live.base}/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"accept": "application/json, text/event-stream"},
        timeout=30,
    )
    assert refused.status_code == 401
    assert refused.headers["content-type"].startswith("application/problem+json")


def test_mcp_over_stdio(live: Live) -> None:
    server = StdioServerParameters(
        command=sys.executable, args=["-m", "api", "mcp"], env=live.env, cwd=str(ROOT)
    )

    async def run() -> dict[str, Any]:
        async with Client(server) as client:
            return await _session(client)

    _check_session(asyncio.run(run()))
