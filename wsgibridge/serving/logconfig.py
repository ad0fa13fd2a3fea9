"""``--log-config``: the server's loggers from a ``logging.config.dictConfig`` file.

Rule: a file holding a dictConfig dictionary, JSON (``.json``) or TOML
(``.toml``, read as ``--config`` files are), replaces the command line's own
logging setup (``run.configure_logging``); every problem with it - unreadable,
not JSON or TOML, not a dictionary, refused by ``dictConfig`` - is a
:class:`~wsgibridge.errors.ConfigError` naming the file, raised before
anything listens.  One default differs from ``dictConfig``'s: loggers that
exist already (wsgibridge's own, the app's) stay enabled unless the file says
``"disable_existing_loggers": true``, since wsgibridge's loggers exist before
any file is read and would otherwise fall silent.

The access log keeps its fast path (no ``LogRecord`` per line) when the file
gives ``wsgibridge.access`` one handler of class
``wsgibridge.serving.accesssink.AccessSink`` (``"target"``: ``stderr``,
``stdout`` or a path), no formatter or filter, and ``"propagate": false``
(``accesssink.direct_sink``); any other handler gets ``LogRecord`` objects,
with the request's fields in their ``access`` attribute.
"""

from __future__ import annotations

import json
import logging.config
from typing import Any

from ..configfile import load_toml
from ..errors import ConfigError

__all__ = ["apply_log_config", "read_log_config"]


def read_log_config(path: str) -> dict[str, Any]:
    """The dictConfig dictionary in ``path`` (``.json`` or ``.toml``), checked for form only."""
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the log config file: {exc.strerror or exc}"
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    data: Any
    if path.endswith(".toml"):
        data = load_toml(text, path)
    elif path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    else:
        raise ConfigError(f"{path}: a log config file is .json or .toml")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a log config file holds an object (a dictConfig dictionary)")
    if data.get("version") != 1:
        # dictConfig's own words are "dictionary doesn't specify a version".
        raise ConfigError(f"{path}: the log config needs version = 1 (dictConfig's schema)")
    return data


def apply_log_config(path: str) -> None:
    """Read ``path`` and configure logging with it (``logging.config.dictConfig``)."""
    data = read_log_config(path)
    data.setdefault("disable_existing_loggers", False)
    try:
        logging.config.dictConfig(data)
    except Exception as exc:  # dictConfig raises ValueError, TypeError, ImportError ...
        cause = exc.__cause__
        reason = f"{exc}: {cause}" if cause is not None else str(exc)
        raise ConfigError(f"{path}: the log config was refused: {reason}") from None
