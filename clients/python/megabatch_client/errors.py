"""The client's exceptions: every failed call raises a MegabatchError (or one
of its subclasses) carrying the coordinator's status code and message; the
gRPC error it wraps is its __cause__."""

from typing import Dict, Type

import grpc

__all__ = ["MegabatchError", "InvalidArgument", "NotFound", "PermissionDenied",
           "Unauthenticated", "ResourceExhausted", "Unavailable", "from_rpc_error"]


class MegabatchError(Exception):
    """A call the coordinator refused or could not answer. `code` is the
    gRPC status code (a grpc.StatusCode), `message` the coordinator's text."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__("%s: %s" % (code.name, message))
        self.code = code
        self.message = message


class InvalidArgument(MegabatchError):
    """A bad spec, query or argument; the message names the field."""


class NotFound(MegabatchError):
    """No such sweep (or trial)."""


class PermissionDenied(MegabatchError):
    """The token may not do this (another user's sweep, an admin call)."""


class Unauthenticated(MegabatchError):
    """No token, or one the coordinator does not know."""


class ResourceExhausted(MegabatchError):
    """A quota or limit was reached (pending trials, open streams)."""


class Unavailable(MegabatchError):
    """The coordinator cannot be reached (down, restarting, wrong address)."""


_BY_CODE: Dict[grpc.StatusCode, Type[MegabatchError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def from_rpc_error(error: grpc.RpcError) -> MegabatchError:
    """The MegabatchError for a gRPC error (its code's subclass when it has one)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return _BY_CODE.get(code, MegabatchError)(code, details or "")
