"""The service's tools for agents, over the Model Context Protocol (the official SDK, ``mcp``).

Three tools, each with an input schema and structured output (pydantic models, so the SDK publishes
both schemas and validates the arguments):
  search_news      query, as_of, k, sources, after, before → passages, each with its citation
  answer_question  question, history, as_of → the cited answer (follow-ups understood, rag/follow.py)
  get_article      id → the stored article
Served over Streamable HTTP at ``/mcp`` by `rag serve` (stateless, JSON responses; the guard in front of
it checks bearer keys of scope ``ask``, origins and limits as for ``/ask``) and over stdio by `rag mcp`
for desktop clients. A bad argument, an unknown article or an unanswerable request is a tool error (the
client sees ``isError`` and the reason), never a crash; errors name no file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import date
from typing import Annotated, Any, Literal

import anyio
import msgspec
from litestar import asgi
from litestar.types import HTTPResponseStartEvent, Receive, Scope, Send
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field

from api.web.problems import to_problem
from api.web.schemas import cited_source
from index.errors import ArticleNotFoundError, RagError
from index.records import ID_PATTERN
from rag import Answerer, Citation, Filters, Hit
from rag.answer import MAX_TOP_K
from rag.config import DEFAULT_MAX_QUESTION_CHARS
from rag.follow import MAX_HISTORY, Turn

Text = Annotated[str, Field(min_length=1, max_length=DEFAULT_MAX_QUESTION_CHARS)]
ArticleId = Annotated[str, Field(pattern=ID_PATTERN.removesuffix(r"(?![\s\S])") + "$")]
"""An article id (index.records.ID_PATTERN) ending in ``$``: pydantic's regex engine (Rust's) has no
lookahead, and its ``$``, like JSON Schema's, is the end of the text, never before a last newline."""
READ_ONLY = ToolAnnotations(read_only_hint=True, open_world_hint=False)
INSTRUCTIONS = (
    "Questions over the indexed news. answer_question gives a short answer whose every sentence is a "
    "verbatim quote with its citation [n] (outlet, headline, date, link); it says so when the news does "
    "not answer. search_news finds passages; get_article reads one article whole. Dates are YYYY-MM-DD; "
    "as_of answers as on that day (nothing published later is used)."
)


class Source(BaseModel):
    """One citation: the article and the sentence quoted from it."""

    n: int
    article_id: str
    outlet: str | None
    headline: str
    published_at: date | None
    url: str | None
    quote: str
    """Verbatim from the article's body; empty for a source known by its headline alone."""


class Passage(BaseModel):
    rank: int
    article_id: str
    outlet: str | None
    headline: str
    published_at: date | None
    url: str | None
    text: str
    similarity: float
    """Cosine between the query and the passage."""


class SearchResult(BaseModel):
    passages: list[Passage]


class ShortAnswer(BaseModel):
    """The words that answer, inside citation ``n``'s quote (``quote[start:end] == text``)."""

    text: str
    n: int
    start: int
    end: int


class AnswerResult(BaseModel):
    short_answer: ShortAnswer | None
    """The words that answer, when the reader is confident; null otherwise."""
    unstated: str | None = None
    """Says in words that the quotes are about the question but none states what it asks (a why the
    articles never give); null otherwise."""
    answer: str
    """The answer, each sentence ending in the [n] of its citation."""
    abstained: bool
    """The indexed news does not answer; ``citations`` are then the closest sources."""
    citations: list[Source]
    standalone_question: str
    """What was searched: the question, or a follow-up made standalone from the history."""


class ArticleResult(BaseModel):
    id: str
    headline: str
    outlet: str | None
    url: str | None
    published_at: date | None
    authors: list[str]
    body: str


class HistoryMessage(BaseModel):
    """One earlier message of the conversation."""

    role: Literal["user", "assistant"]
    content: Text
    article_ids: Annotated[list[ArticleId], Field(max_length=50)] = []
    """An assistant message's cited articles."""


def _source(c: Citation) -> Source:
    return Source(**cited_source(c))


def _passage(h: Hit) -> Passage:
    a = h.article
    return Passage(
        rank=h.rank,
        article_id=a.id,
        outlet=a.source,
        headline=a.headline,
        published_at=a.published_at,
        url=a.url,
        text=h.chunk.text,
        similarity=round(h.similarity, 4),
    )


async def _run(work: Callable[[], Any]) -> Any:
    """``work`` in a worker thread; the project's errors as tool errors that name no file."""
    try:
        return await anyio.to_thread.run_sync(work)
    except RagError as exc:
        raise ToolError(to_problem(exc).detail or str(exc)) from None


def build_mcp(answerer_of: Callable[[], Answerer]) -> MCPServer:
    """The MCP server over the Answerer that ``answerer_of`` gives (it raises while the index loads)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server: MCPServer = MCPServer("news-qa", instructions=INSTRUCTIONS, log_level="WARNING")
    # MCPServer configures the root logger when it has no handler; the service's logging stays its own.
    root.handlers[:] = handlers
    root.setLevel(level)

    @server.tool(annotations=READ_ONLY)
    async def search_news(
        query: Text,
        as_of: date | None = None,
        k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 5,
        sources: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=50)] | None = None,
        after: date | None = None,
        before: date | None = None,
    ) -> SearchResult:
        """Passages of indexed news articles that match a query, best first, each with its article's outlet,
        headline, date and link. ``sources`` keeps only those outlets; ``after``/``before`` bound the
        publication date; ``as_of`` searches as on that day."""

        def work() -> SearchResult:
            answerer = answerer_of()
            filters = Filters(tuple(sources or ()), after, before)
            question = answerer.question(query, as_of=as_of, top_k=k, filters=filters)
            return SearchResult(passages=[_passage(h) for h in answerer.search(question)])

        result: SearchResult = await _run(work)
        return result

    @server.tool(annotations=READ_ONLY)
    async def answer_question(
        question: Text,
        history: Annotated[list[HistoryMessage], Field(max_length=MAX_HISTORY)] | None = None,
        as_of: date | None = None,
    ) -> AnswerResult:
        """A short answer from the indexed news in which every sentence is a verbatim quote ending in the
        [n] of its citation, led by ``short_answer`` (the words that answer, in citation n's quote) when the
        reader is confident (outlet, headline, date, link, the quoted sentence). ``history``: the
        conversation so far, oldest first, so that a follow-up such as "When will it open?" is
        understood. When the news does not answer, ``abstained`` is true and the closest sources are
        listed."""

        def work() -> AnswerResult:
            answerer = answerer_of()
            turns = [Turn(m.role, m.content, tuple(m.article_ids)) for m in history or ()]
            answer = answerer.ask(answerer.question(question, as_of=as_of, history=turns))
            short = answer.short_answer
            return AnswerResult(
                short_answer=None
                if short is None
                else ShortAnswer(text=short.text, n=short.n, start=short.start, end=short.end),
                unstated=answer.unstated,
                answer=answer.text,
                abstained=answer.abstained,
                citations=[_source(c) for c in answer.citations],
                standalone_question=answer.standalone_question,
            )

        result: AnswerResult = await _run(work)
        return result

    @server.tool(annotations=READ_ONLY)
    async def get_article(id: ArticleId) -> ArticleResult:
        """One stored article, whole: headline, outlet, link, date, authors and the cleaned body."""

        def work() -> ArticleResult:
            found = answerer_of().index.reader().articles([id])
            if id not in found:
                raise ArticleNotFoundError(f"no article with id {id!r}")
            a = found[id]
            return ArticleResult(
                id=a.id,
                headline=a.headline,
                outlet=a.source,
                url=a.url,
                published_at=a.published_at,
                authors=list(a.authors),
                body=a.body,
            )

        result: ArticleResult = await _run(work)
        return result

    return server


def mcp_mount(server: MCPServer) -> tuple[Any, Callable[[Any], contextlib.AbstractAsyncContextManager[None]]]:
    """The ``/mcp`` route of the Litestar app (Streamable HTTP, stateless, JSON responses) and the
    lifespan that runs its session manager. Host and origin checks are the guard's (api/web/guard.py), so
    the SDK's own DNS-rebinding check is off."""
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    manager = server.session_manager

    @asgi("/mcp", is_mount=True, copy_scope=True, opt={"scope": "ask"}, include_in_schema=False)
    async def mcp_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") == "GET":  # see _no_stream
            await _no_stream(send)
            return
        await manager.asgi_app(scope, receive, send)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        async with manager.run():
            yield

    return mcp_endpoint, lifespan


async def _no_stream(send: Send) -> None:
    """405 to a GET: a stateless server has no session whose messages a stream could carry, and the
    transport's specification lets a server without one answer 405. (The SDK's stateless mode opens the
    stream anyway and never sends or closes it: each such GET held a connection and its memory.)"""
    body = msgspec.json.encode(
        {
            "status": 405,
            "title": "Method Not Allowed",
            "detail": "POST JSON-RPC messages to /mcp; it has no event stream",
        }
    )
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": 405,
        "headers": [
            (b"content-type", b"application/problem+json"),
            (b"allow", b"POST"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def run_stdio(answerer: Answerer) -> None:
    """`rag mcp`: the tools over stdin and stdout, for a desktop client that starts the process."""
    anyio.run(build_mcp(lambda: answerer).run_stdio_async)
