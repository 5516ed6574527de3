"""Error bodies that always serialise, for every server here (the front and the KServe predictor).

Python's json module reads the non-standard literals NaN, Infinity and -Infinity as floats, and pydantic puts a
field's offending input into each validation error. Starlette's JSONResponse refuses to write non-finite floats
(strict JSON has none), so FastAPI's stock 422 handler turns a request holding one into a 500. The handler here
answers the same 422 body with each non-finite float written as the string Python prints for it ("nan", "inf",
"-inf"), which names the value without breaking any strict JSON reader.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.requests import Request


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float, at any depth of dicts, lists and tuples, replaced by its repr."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


async def validation_error_handler(_: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 ({"detail": [errors]}, each with loc naming the field), writable whatever the input held."""
    return JSONResponse(status_code=422, content={"detail": json_safe(jsonable_encoder(error.errors()))})
