"""Exceptions that carry what the kernel would return.

Expected failures (a bad write, a rejected commit, a bad config) raise one of these;
anything else is a bug and is logged loudly by whoever catches it.
"""
import errno as _errno


class ErrnoError(Exception):
    """A failure the kernel reports with an errno (EINVAL, ERANGE, EBUSY, ...)."""

    def __init__(self, err: int, msg: str = ""):
        super().__init__(err, msg or _errno.errorcode.get(err, str(err)))
        self.errno = err
        self.msg = msg or _errno.errorcode.get(err, str(err))

    def __str__(self) -> str:
        return f"{_errno.errorcode.get(self.errno, self.errno)}: {self.msg}"


class DamonError(ErrnoError):
    """Raised by the engine: validation at on/commit, commands on a stopped kdamond."""


class MmError(ErrnoError):
    """Raised by the emulated machine (a split or collapse that fails, an unknown pid)."""


class ConfigError(Exception):
    """A config or workload file the daemon refuses to start with; str() is one line
    naming the file, the line (when known) and the problem."""

    def __init__(self, path: str, problem: str, line: int | None = None):
        self.path, self.problem, self.line = str(path), problem, line
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {problem}")
