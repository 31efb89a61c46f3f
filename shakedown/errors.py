"""Error types, one per gRPC status code.

The agent raises these and the server turns them into statuses; the driver
turns statuses back into the same types, so a test can ``pytest.raises(NotFound)``
without knowing gRPC. The offending field, when there is one, leads the
message ("spec.image: ...") and travels in trailing metadata too.
"""

from __future__ import annotations

import grpc

FIELD_METADATA = "x-shakedown-field"


class ShakedownError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


class Cancelled(ShakedownError):
    code = grpc.StatusCode.CANCELLED


class InvalidArgument(ShakedownError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(ShakedownError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(ShakedownError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ShakedownError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PolicyError(ShakedownError):
    """The caller may not do this: a role, an allow-list or a node policy says no."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(ShakedownError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(ShakedownError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ImagePullError(FailedPrecondition):
    """The engine could not pull ``spec.image`` (unknown host, manifest unknown, denied).

    Not UNAVAILABLE: the agent answered, the registry did not. It shares
    FAILED_PRECONDITION with its base (the image must be pullable first) and is told
    apart on the wire by its field, ``spec.image``, which no other
    FAILED_PRECONDITION carries.
    """

    FIELD = "spec.image"

    def __init__(self, message: str, *, field: str | None = FIELD) -> None:
        super().__init__(message, field=field)


class Aborted(ShakedownError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(ShakedownError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(ShakedownError):
    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(ShakedownError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(ShakedownError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(ShakedownError):
    code = grpc.StatusCode.DATA_LOSS


class AuthError(ShakedownError):
    """Missing, bad, stale or replayed credentials."""

    code = grpc.StatusCode.UNAUTHENTICATED


class UnknownError(ShakedownError):
    code = grpc.StatusCode.UNKNOWN


BY_CODE: dict[grpc.StatusCode, type[ShakedownError]] = {
    cls.code: cls
    for cls in (
        Cancelled,
        UnknownError,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PolicyError,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        InternalError,
        Unavailable,
        DataLoss,
        AuthError,
    )
}


def from_status(
    code: grpc.StatusCode, details: str | None, field: str | None = None
) -> ShakedownError:
    cls = BY_CODE.get(code, UnknownError)
    if cls is FailedPrecondition and field == ImagePullError.FIELD:
        cls = ImagePullError
    message = details or code.name
    if field and message.startswith(f"{field}: "):
        message = message[len(field) + 2 :]
    return cls(message, field=field)


def from_rpc_error(err: grpc.RpcError) -> ShakedownError:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    field = None
    trailing = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in trailing or ():
        if key == FIELD_METADATA and isinstance(value, str):
            field = value
    return from_status(code, details, field)
