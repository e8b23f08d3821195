"""The article routes: read one, add some (at once, or as a background job), delete one; the jobs."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.exceptions import ValidationException
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter
from litestar.status_codes import HTTP_204_NO_CONTENT
from litestar.types import ControllerRouterHandler

from api.web.context import service_of
from api.web.doors import ADMIN, ASK, BEARER, guarded
from api.web.openapi import ArticlesOperation
from api.web.problems import problems
from api.web.schemas import (
    MAX_ARTICLES_PER_REQUEST,
    ArticleOut,
    ArticlesIn,
    IngestOut,
    JobOut,
    article_out,
    ingest_out,
    job_out,
)
from index import ArticleError, parse_record
from index.errors import (
    ArticleNotFoundError,
    NotFoundError,
)
from index.records import ID_PATTERN, Article

ArticleId = Annotated[str, Parameter(pattern=ID_PATTERN, description="an article id")]


@get(
    "/articles/{article_id:str}",
    sync_to_thread=True,
    opt=ASK,  # one path with delete_article's, which needs an admin key: both outside the groups
    security=BEARER,
    responses=problems(400, 404),
    summary="One stored article",
)
def get_article(request: Request[Any, Any, Any], article_id: ArticleId) -> ArticleOut:
    answerer = service_of(request).answerer
    found = answerer.index.reader().articles([article_id])
    if article_id not in found:
        raise ArticleNotFoundError(f"no article with id {article_id!r}")
    return article_out(found[article_id])


@post(
    "/articles",
    sync_to_thread=True,
    status_code=200,
    responses={
        202: ResponseSpec(JobOut, description="Accepted as a background job; poll the job's url"),
        **problems(400, 413, 415, 422),
    },
    summary="Ingest one JSON article or a list of them",
    operation_class=ArticlesOperation,
    description=(
        f"Up to {MAX_ARTICLES_PER_REQUEST} articles. A small request is ingested at once (200, with what "
        "was added, replaced, unchanged or failed); more articles or more text than the request budget "
        "become a background job (202, Location: /jobs/{id})."
    ),
)
def post_articles(
    request: Request[Any, Any, Any], data: JSONBody[ArticlesIn]
) -> Response[IngestOut | JobOut]:
    service = service_of(request)
    ingestor = service.ingestor
    records = data if isinstance(data, list) else [data]
    if not 1 <= len(records) <= MAX_ARTICLES_PER_REQUEST:  # msgspec drops bounds inside a union
        raise ValidationException(f"send 1 to {MAX_ARTICLES_PER_REQUEST} articles in one request")
    items: list[Article | ArticleError] = []
    for number, record in enumerate(records):
        fields = {k: v for k, v in msgspec.structs.asdict(record).items() if v is not None}
        try:
            items.append(parse_record(fields, f"article[{number}]"))
        except ArticleError as exc:
            items.append(exc)
    if all(isinstance(item, ArticleError) for item in items):
        raise ArticleError("body", "no article could be ingested: " + "; ".join(map(str, items)))
    budget = service.settings.service
    text = sum(len(r.body) for r in records)
    if len(records) > budget.ingest_sync_articles or text > budget.ingest_sync_chars:
        job = service.jobs.submit(items)
        out = job_out(job)
        return Response(out, status_code=202, headers={"Location": out.url})
    report = ingestor.ingest(items, progress=False)
    return Response(ingest_out(report), status_code=200)


@get(
    "/jobs/{job_id:str}",
    sync_to_thread=False,
    responses=problems(400, 404),
    summary="A background ingest job",
)
def get_job(request: Request[Any, Any, Any], job_id: FromPath[str]) -> JobOut:
    job = service_of(request).jobs.table.get(job_id)
    if job is None:
        raise NotFoundError(f"no job with id {job_id!r}")
    return job_out(job)


@delete(
    "/articles/{article_id:str}",
    sync_to_thread=True,
    opt=ADMIN,
    security=BEARER,
    status_code=HTTP_204_NO_CONTENT,
    responses=problems(400, 404),
    summary="Remove an article; no question asked after this returns can cite it",
)
def delete_article(request: Request[Any, Any, Any], article_id: ArticleId) -> None:
    answerer = service_of(request).answerer
    answerer.index.delete(article_id)


ROUTES: list[ControllerRouterHandler] = [get_article, delete_article, guarded(ADMIN, post_articles, get_job)]
