"""JSON-RPC 2.0 frames, one object per line, without I/O.

The envelope is all this module knows; methods and their params belong to the
tiers. :func:`parse_frame` raises :class:`JsonRpcError`, which carries the
error code and request id to answer with, so a server can always reply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

from ..compat import SLOTS, jsonlib
from .errors import RemoteProtocolError

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# The application's own codes (-32000..-32099) are host_wire.Code.

RequestId = Union[int, str]
Params = Union[dict[str, Any], list[Any], None]


@dataclass(frozen=True, **SLOTS)
class Request:
    id: RequestId
    method: str
    params: Params = None


@dataclass(frozen=True, **SLOTS)
class Notification:
    method: str
    params: Params = None


@dataclass(frozen=True, **SLOTS)
class Response:
    id: RequestId
    result: Any


@dataclass(frozen=True, **SLOTS)
class ErrorResponse:
    id: RequestId | None
    code: int
    message: str
    data: Any = None


Frame = Union[Request, Notification, Response, ErrorResponse]


class JsonRpcError(RemoteProtocolError):
    """A frame we must answer with an error (``code``) for request ``id``."""

    def __init__(
        self, code: int, message: str, *, id: RequestId | None = None, data: Any = None
    ) -> None:
        super().__init__(message, reason=_REASONS.get(code, "application_error"))
        self.code = code
        self.id = id
        self.data = data

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(id=self.id, code=self.code, message=str(self), data=self.data)


_REASONS = {
    PARSE_ERROR: "parse_error",
    INVALID_REQUEST: "invalid_request",
    METHOD_NOT_FOUND: "method_not_found",
    INVALID_PARAMS: "invalid_params",
}


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (int, str)) and not isinstance(value, bool))


def _frame_from_object(obj: Any) -> Frame:
    if not isinstance(obj, dict):
        raise JsonRpcError(INVALID_REQUEST, "a frame must be a JSON object (batches unsupported)")
    raw_id = obj.get("id")
    rid = raw_id if _valid_id(raw_id) else None
    if obj.get("jsonrpc") != "2.0":
        raise JsonRpcError(INVALID_REQUEST, 'jsonrpc must be "2.0"', id=rid)
    if not _valid_id(raw_id):
        raise JsonRpcError(INVALID_REQUEST, "id must be a string, a number or null")
    if "method" in obj:
        return _request(obj, rid)
    if "result" in obj and rid is not None:
        return Response(id=rid, result=obj["result"])
    if isinstance(obj.get("error"), dict):
        err = obj["error"]
        code, message = err.get("code"), err.get("message")
        if isinstance(code, int) and isinstance(message, str):
            return ErrorResponse(id=rid, code=code, message=message, data=err.get("data"))
    raise JsonRpcError(INVALID_REQUEST, "not a request, response or error", id=rid)


def _request(obj: dict[str, Any], rid: RequestId | None) -> Frame:
    method, params = obj["method"], obj.get("params")
    if not isinstance(method, str):
        raise JsonRpcError(INVALID_REQUEST, "method must be a string", id=rid)
    if params is not None and not isinstance(params, (dict, list)):
        raise JsonRpcError(INVALID_PARAMS, "params must be an object or an array", id=rid)
    if "id" not in obj:
        return Notification(method=method, params=params)
    if rid is None:
        raise JsonRpcError(INVALID_REQUEST, "a request id must not be null")
    return Request(id=rid, method=method, params=params)


def parse_frame(line: bytes) -> Frame:
    """Parse one line into a frame, or raise :class:`JsonRpcError`."""
    try:
        obj = jsonlib.loads(line)
    except jsonlib.JSONDecodeError as exc:
        raise JsonRpcError(PARSE_ERROR, f"parse error: {exc}") from None
    return _frame_from_object(obj)


def frame_to_object(frame: Frame) -> dict[str, Any]:
    """The JSON-RPC 2.0 object for a frame."""
    if isinstance(frame, Request):
        out: dict[str, Any] = {"jsonrpc": "2.0", "id": frame.id, "method": frame.method}
        if frame.params is not None:
            out["params"] = frame.params
        return out
    if isinstance(frame, Notification):
        out = {"jsonrpc": "2.0", "method": frame.method}
        if frame.params is not None:
            out["params"] = frame.params
        return out
    if isinstance(frame, Response):
        return {"jsonrpc": "2.0", "id": frame.id, "result": frame.result}
    if isinstance(frame, ErrorResponse):
        error: dict[str, Any] = {"code": frame.code, "message": frame.message}
        if frame.data is not None:
            error["data"] = frame.data
        return {"jsonrpc": "2.0", "id": frame.id, "error": error}
    raise TypeError(f"not a frame: {frame!r}")


def encode_frame(frame: Frame) -> bytes:
    """One line of bytes, newline included."""
    return jsonlib.dumps(frame_to_object(frame)) + b"\n"
