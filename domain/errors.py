"""Domain errors: one class per outcome the CSI spec distinguishes."""


class DomainError(Exception):
    """Base of every error a use case raises on purpose."""


class InvalidArgument(DomainError):
    """A required field is missing, or a field is invalid or unsupported."""


class NotFound(DomainError):
    """The volume (or its content source) does not exist."""


class AlreadyExists(DomainError):
    """The name or target exists with incompatible arguments."""


class OperationInFlight(DomainError):
    """Another operation on the same volume is running."""


class InvalidToken(DomainError):
    """A listing's starting_token is not one this driver handed out (or no longer fits the configured shares)."""


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the call."""


class Obstructed(FailedPrecondition):
    """Something other than what a path needs stands at it or on the way to it on a share: a regular file, a
    symbolic link, a FIFO or a device where a directory must be, or anything but a regular file where a record is
    read. It is never followed, opened in a way that could block, or replaced; each use case says what it means
    (a volume that does not exist, a place that is taken)."""


class OutOfRange(DomainError):
    """The capacity range cannot be met."""


class Unavailable(DomainError):
    """A dependency (the NFS server, a helper binary) cannot be reached now."""


class DeadlineExceeded(DomainError):
    """An external operation did not finish within its time bound."""


class ResourceExhausted(DomainError):
    """Not enough space or too many concurrent operations."""


class MountFailed(DomainError):
    """A mount or an unmount (or a look at what is mounted) failed for a reason that is not the caller's."""


class StorageFailed(DomainError):
    """A file operation on a share, or on the node's own records, failed for a reason that is not the caller's.

    Nothing was being mounted: a link or a file where a directory should be, an unreadable record, an NFS error.
    """
