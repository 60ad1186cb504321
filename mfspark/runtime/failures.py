"""What ended a command, told from its exception chain (Python causes and, for a Py4JJavaError, the Java
causes): a lost connection to the driver JVM, or a full disk. Used by `mfspark.commands.main` to turn them
into one line."""

from __future__ import annotations

import errno
import re
from collections.abc import Iterator

NO_SPACE = "No space left on device"
# A path or URI in a Java message, e.g. "Task failed while writing rows to file:/data/out." (trailing dot dropped).
PATH = re.compile(r"(?:\b[a-z][a-z0-9+.-]*:)?/[^\s'\"]*[^\s'\".,;:)]")


def chain(exc: BaseException) -> Iterator[BaseException]:
    """exc and its causes (explicit, else implicit), each once."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def connection_lost(exc: BaseException) -> bool:
    """A call to the JVM failed for want of an answer (not a Java exception, which the JVM sent)."""
    try:
        from py4j.protocol import Py4JError, Py4JJavaError
    except ImportError:  # no Spark installed: no JVM to lose
        return False
    return any(isinstance(e, (ConnectionError, EOFError)) or (isinstance(e, Py4JError)
                                                             and not isinstance(e, Py4JJavaError))
               for e in chain(exc))


def java_messages(exc: BaseException) -> Iterator[str]:
    """The messages of a Py4JJavaError's Java exception and its causes (none when the JVM cannot be asked)."""
    from py4j.protocol import Py4JError

    try:
        java, depth = exc.java_exception, 0
        while java is not None and depth < 20:
            yield java.getMessage() or ""
            java, depth = java.getCause(), depth + 1
    except Py4JError:
        return


def no_space_left(exc: BaseException, fallback_path: str | None) -> str | None:
    """'no space left on device writing <path>' when a full disk is behind `exc`, else None.

    The path is the first one a message names (Spark's TASK_WRITE_FAILED names the output
    directory, an OSError its file), else `fallback_path` (the command's --out).
    """
    messages = []
    for e in chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            messages.append(f"{NO_SPACE}: {e.filename or ''}")
        elif hasattr(e, "java_exception"):
            messages.extend(java_messages(e))
    if not any(NO_SPACE in message for message in messages):
        return None
    paths = [match.group(0) for message in messages for match in [PATH.search(message)] if match]
    where = paths[0] if paths else fallback_path
    return f"no space left on device writing {where}" if where else "no space left on device"
