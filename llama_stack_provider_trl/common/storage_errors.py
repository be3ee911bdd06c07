"""Say in words why a file could not be written: disk full, or a location that is not writable."""

import errno

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}
_NOT_WRITABLE = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EEXIST, errno.EISDIR}


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL | _NOT_WRITABLE


def describe_write_error(path: object, exc: OSError) -> str:
    if exc.errno in _DISK_FULL:
        problem = "the disk is full"
    elif exc.errno in _NOT_WRITABLE:
        problem = "the location is not writable"
    else:
        problem = "it could not be written"
    return f"cannot write {path}: {problem} ({exc.strerror or exc})"
