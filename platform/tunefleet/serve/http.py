"""The HTTP edge of the Serve deployment: reading `POST /predict` bodies and turning every error into
a JSON answer.

A bad request is the caller's mistake and gets a 4xx with `{"error": {"status", "message"}}` naming
what to change; nothing a client sends may produce a 500 or take the replica down. Limits are checked
before any model work: the raw body size (from `Content-Length`, then the bytes read), the number of
texts and each text's length.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("ray.serve")

# The worst case of JSON-encoding one character: a non-BMP code point written as two \uXXXX escapes.
_MAX_BYTES_PER_CHAR = 12


class ApiError(Exception):
    """A request the service refuses, with the HTTP status to answer it with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status, headers=headers)


def install_error_handlers(api: FastAPI) -> None:
    """JSON bodies for our own refusals, for routing errors (404, 405) and for anything unexpected."""

    @api.exception_handler(ApiError)
    async def _refused(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @api.exception_handler(StarletteHTTPException)
    async def _routing(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; try POST /predict, GET /healthz, GET /model"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, str(message), headers=getattr(exc, "headers", None))

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, f"invalid request: {exc.errors()}")

    @api.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Routes catch model errors themselves; this is the last line, so a bug answers JSON too.
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}")


async def read_texts(request: Request, max_texts: int, max_chars: int) -> list[Any]:
    """The `texts` of a `{"texts": [...]}` body (strings, or objects for sentence pairs), checked
    against the service's limits.

    Raises:
        ApiError: 400 for a body that is not that shape, 413 for one over the limits.
    """
    max_bytes = max_texts * (max_chars * _MAX_BYTES_PER_CHAR + 8) + 1024
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"body of {declared} bytes is over the limit of {max_bytes} "
                            f"({max_texts} texts of {max_chars} characters)")
    raw = await request.body()
    if len(raw) > max_bytes:
        raise ApiError(413, f"body of {len(raw)} bytes is over the limit of {max_bytes}")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise ApiError(400, f'body is not valid JSON ({exc}); send {{"texts": ["..."]}}') from None
    return check_texts(body, max_texts, max_chars)


def check_texts(body: Any, max_texts: int, max_chars: int) -> list[Any]:
    """See `read_texts`; split out so the rules can be tested without HTTP."""
    if not isinstance(body, dict):
        raise ApiError(400, f'body is a JSON {type(body).__name__}; send an object {{"texts": ["..."]}}')
    unknown = sorted(set(body) - {"texts"})
    if unknown:
        raise ApiError(400, f'unknown field(s) {unknown}; the body has one field, "texts"')
    if "texts" not in body:
        raise ApiError(400, 'missing field "texts"; send {"texts": ["..."]}')
    texts = body["texts"]
    if not isinstance(texts, list):
        raise ApiError(400, f'"texts" is a {type(texts).__name__}; it must be a list of strings')
    if not texts:
        raise ApiError(400, '"texts" is empty; send at least one text')
    if len(texts) > max_texts:
        raise ApiError(413, f'"texts" has {len(texts)} items; the limit is {max_texts} per request, '
                            "split it into several requests")
    for i, text in enumerate(texts):
        # A string, or an object such as {"text": ..., "text_pair": ...} for sentence-pair models; the
        # model's task checks the fields, this checks sizes before any of that.
        if not isinstance(text, (str, dict)):
            raise ApiError(400, f'"texts"[{i}] is a {type(text).__name__}; every item must be a string '
                                '(or, for sentence pairs, an object {"text": "...", "text_pair": "..."})')
        for value in text.values() if isinstance(text, dict) else [text]:
            if isinstance(value, str) and len(value) > max_chars:
                raise ApiError(413, f'"texts"[{i}] has {len(value)} characters; the limit is {max_chars}')
    return texts
