"""ember's errors: libember's statuses (gRPC codes) as Python exceptions.

Every failing call raises an ``ember.Error`` subclass chosen by the code, with
``.code`` (an ``ember.Code``), ``.message`` (libember's: "shard 1 (host:port):
NOT_FOUND ..." when a shard failed) and ``.shard`` (the failing shard's index,
or None when the call was refused before anything was sent — then nothing
changed anywhere). Catch ``ember.Error`` for all of them, or a subclass:

    try:
        client.pull("clicks", keys)
    except ember.NotFoundError:
        client.create_table("clicks", dim=16, capacity_per_shard=1 << 20)

Three also derive from the matching builtin: InvalidArgumentError is a
ValueError, NotFoundError a LookupError, DeadlineExceededError a TimeoutError.
"""

import enum


class Code(enum.IntEnum):
    """gRPC status codes, as libember returns them (ember_status, EMBER_* in
    include/ember/types.h)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


class Error(Exception):
    """A failed ember call: .code (Code), .message (str), .shard (int or None)."""

    code = Code.UNKNOWN

    def __init__(self, code, message, shard=None):
        try:
            code = Code(code)
        except ValueError:
            code = Code.UNKNOWN
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.shard = shard

    @staticmethod
    def of(code, message, shard=None):
        """The Error subclass for `code`, built (not raised)."""
        cls = _BY_CODE.get(code, Error)
        return cls(code, message, shard)


class CancelledError(Error):
    code = Code.CANCELLED


class UnknownError(Error):
    code = Code.UNKNOWN


class InvalidArgumentError(Error, ValueError):
    code = Code.INVALID_ARGUMENT


class DeadlineExceededError(Error, TimeoutError):
    code = Code.DEADLINE_EXCEEDED


class NotFoundError(Error, LookupError):
    code = Code.NOT_FOUND


class AlreadyExistsError(Error):
    code = Code.ALREADY_EXISTS


class PermissionDeniedError(Error):
    code = Code.PERMISSION_DENIED


class ResourceExhaustedError(Error):
    code = Code.RESOURCE_EXHAUSTED


class FailedPreconditionError(Error):
    code = Code.FAILED_PRECONDITION


class AbortedError(Error):
    code = Code.ABORTED


class OutOfRangeError(Error):
    code = Code.OUT_OF_RANGE


class UnimplementedError(Error):
    code = Code.UNIMPLEMENTED


class InternalError(Error):
    code = Code.INTERNAL


class UnavailableError(Error):
    code = Code.UNAVAILABLE


class DataLossError(Error):
    code = Code.DATA_LOSS


class UnauthenticatedError(Error):
    code = Code.UNAUTHENTICATED


_BY_CODE = {
    cls.code: cls
    for cls in (
        CancelledError, UnknownError, InvalidArgumentError, DeadlineExceededError,
        NotFoundError, AlreadyExistsError, PermissionDeniedError, ResourceExhaustedError,
        FailedPreconditionError, AbortedError, OutOfRangeError, UnimplementedError,
        InternalError, UnavailableError, DataLossError, UnauthenticatedError,
    )
}
