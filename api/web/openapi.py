"""OpenAPI details Litestar 2 leaves out, so clients and schema fuzzers know exactly what is refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType

from api.web.schemas import MAX_ARTICLES_PER_REQUEST


class StrictStructSchemaPlugin(StructSchemaPlugin):
    """Litestar's own Struct schema plugin (private in Litestar 2.25, pinned), plus
    ``additionalProperties: false`` for Structs declared with ``forbid_unknown_fields=True``, and the
    bounds of an optional list field (``list[Annotated[str, Meta(...)]] | None``) where they belong:
    Litestar drops the items' pattern and lengths and puts the list's length outside the array."""

    def to_openapi_schema(self, field_definition: Any, schema_creator: Any) -> Schema:
        schema: Schema = super().to_openapi_schema(field_definition, schema_creator)
        info = msgspec.inspect.type_info(field_definition.type_)
        if isinstance(info, msgspec.inspect.StructType):
            if info.forbid_unknown_fields:
                schema.additional_properties = False
            for field in info.fields:
                found = (schema.properties or {}).get(field.encode_name)
                if isinstance(found, Schema):
                    _bound_list(found, field.type)
        return schema


def _bound_list(schema: Schema, field_type: msgspec.inspect.Type) -> None:
    options = field_type.types if isinstance(field_type, msgspec.inspect.UnionType) else (field_type,)
    lists = [t for t in options if isinstance(t, msgspec.inspect.ListType)]
    if not lists:
        return
    listed = lists[0]
    arrays = [o for o in (schema.one_of or [schema]) if isinstance(o, Schema) and o.type == OpenAPIType.ARRAY]
    for array in arrays:
        array.min_items, array.max_items = listed.min_length, listed.max_length
        item = listed.item_type
        if isinstance(item, msgspec.inspect.StrType) and isinstance(array.items, Schema):
            array.items.pattern = item.pattern
            array.items.min_length, array.items.max_length = item.min_length, item.max_length
    if schema.one_of:
        schema.min_items = schema.max_items = None


@dataclass
class ArticlesOperation(Operation):
    """``POST /articles``: Litestar drops the length bounds of a list inside a union, so the request body
    schema (one article, or a list of 1 to ``MAX_ARTICLES_PER_REQUEST``) states them here."""

    def __post_init__(self) -> None:
        body = self.request_body
        if not isinstance(body, RequestBody) or not body.content:
            return
        schema = body.content["application/json"].schema
        for option in (schema.one_of or []) if isinstance(schema, Schema) else []:
            if isinstance(option, Schema) and option.type == OpenAPIType.ARRAY:
                option.min_items, option.max_items = 1, MAX_ARTICLES_PER_REQUEST


@dataclass
class ChatOperation(Operation):
    """``POST /v1/chat/completions``: the answer is JSON, or with ``"stream": true`` Server-Sent Events of
    ``chat.completion.chunk`` objects ending in ``data: [DONE]``; the 200 response says both."""

    def __post_init__(self) -> None:
        ok = (self.responses or {}).get("200")
        if isinstance(ok, OpenAPIResponse) and ok.content is not None:
            ok.content["text/event-stream"] = OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))
