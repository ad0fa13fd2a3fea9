"""``wsgi.file_wrapper``: lets the server send a real file with ``socket.sendfile``.

PEP 3333 "Optional Platform-Specific File Handling": the wrapper must be an
iterable that yields blocks of the file, and whose ``close()`` closes it, so
that it still works when middleware iterates it instead of handing it back.
When the app returns it unchanged and the file is a regular file, the
response writer sends it with ``socket.sendfile`` (zero-copy on Linux).
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from typing import IO, Any

from .._mypyc import mypyc_attr


@mypyc_attr(allow_interpreted_subclasses=True)
class FileWrapper:
    """Wrap a binary file-like object for ``wsgi.file_wrapper``."""

    def __init__(self, filelike: IO[bytes], blksize: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.blksize = blksize

    def __iter__(self) -> Iterator[bytes]:
        read: Any = self.filelike.read  # what it returns is the writer's to check
        blksize = self.blksize
        while True:
            data = read(blksize)
            if not data:
                return
            yield data

    def close(self) -> None:
        """Close the wrapped file (PEP 3333: the server calls this when done)."""
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def sendfile_span(self) -> tuple[Any, int, int] | None:
        """``(file, offset, count)`` if this can go out with ``sendfile``, else None.

        Only a regular file on disk qualifies; the span runs from the file's
        current position to its end.
        """
        filelike = self.filelike
        try:
            fileno = filelike.fileno()
            offset = filelike.tell()
            st = os.fstat(fileno)
        except (AttributeError, OSError, io.UnsupportedOperation, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        return filelike, offset, max(st.st_size - offset, 0)
