"""Settings from a TOML file and ``WSGIBRIDGE_*`` environment variables, and back to TOML.

Rule: a setting is named by its :class:`~wsgibridge.config.Config` field, everywhere.
This module turns the text of a file or of an environment variable into field
values, checked against each field's type as ``config_fields()`` declares it (no
list of settings is kept here), layers them, and writes a ``Config`` as TOML
that reads back to the same values.  Precedence, lowest first: the defaults,
the file, the environment, the command line.  The functions take values and
return values: nothing is printed (``cli.py`` prints and picks the exit code)
and no file but the one named is read.  Every refusal is a
:class:`~wsgibridge.errors.ConfigSourceError` whose text is the one line to
show, naming the key and the file or variable it came from.

The file is TOML 1.0, read with the standard library's ``tomllib`` (PEP 680,
Python 3.11+; on 3.10 the ``tomli`` package if it is installed, else a clear
refusal).  Keys are top-level, each a field name written with ``_`` or ``-``.
A bool is a TOML boolean; an int an integer (not a boolean); a float an
integer or a float; text a string; a repeatable option (a ``tuple`` field)
an array of strings, or one string; the static mounts (``static``) a table
of prefixes to directories (``{"/static" = "staticfiles"}``) or an array of
``"PREFIX=DIR"`` strings; a file mode (``octal`` metadata) an
integer (write ``0o660``) or an octal string (``"660"``, ``"0o660"``).  TOML
has no null: a field that is unset (``None``) is left out of the file.

The environment: ``WSGIBRIDGE_<FIELD>`` in upper case, converted as the
command line converts the option's text: ``int``, ``float`` and octal as
there; a bool is one of ``1``/``0``, ``true``/``false``, ``yes``/``no``,
``on``/``off`` in any case; a repeatable option's items are separated by
commas (spaces around an item are dropped, empty items too); the static
mounts are such a list of ``PREFIX=DIR`` items (``/static=staticfiles,/media=m``).
A variable that names no field is ignored: the prefix is shared with the build
(``WSGIBRIDGE_COMPILE``) and its tests, and an app may use it for its own
settings.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .config import Config, config_fields
from .errors import ConfigSourceError

__all__ = [
    "ENV_PREFIX",
    "FieldKind",
    "Loaded",
    "Origin",
    "Settings",
    "env_name",
    "field_kind",
    "from_command_line",
    "from_environ",
    "from_toml",
    "load",
    "load_toml",
    "parse_octal",
    "parse_toml",
    "read_toml",
    "resolve",
    "to_toml",
    "toml_string",
    "toml_value",
]

ENV_PREFIX = "WSGIBRIDGE_"

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


# -- what each field accepts ------------------------------------------------------------


@dataclass(frozen=True)
class FieldKind:
    """What one Config field holds, read from its annotation and metadata."""

    name: str
    base: str  # "bool", "int", "float", "str", "tuple" (of str) or "mounts" (of pairs)
    optional: bool  # ``X | None``: unset is None, which TOML cannot write
    octal: bool  # an int written in octal (a file mode)
    choices: tuple[str, ...] | None


_BASES = ("bool", "int", "float", "str")


def field_kind(field: dataclasses.Field[Any]) -> FieldKind:
    """The kind of ``field``; a ``TypeError`` for a type a file or variable cannot give."""
    annotation = field.type
    if isinstance(annotation, str):
        text = annotation
    elif isinstance(annotation, type):
        text = annotation.__name__
    else:
        text = repr(annotation)
    parts = [part.strip() for part in text.split("|")]
    optional = "None" in parts
    rest = [part for part in parts if part != "None"]
    base = rest[0] if len(rest) == 1 else text
    if base == "tuple[str, ...]":
        base = "tuple"
    elif base == "tuple[tuple[str, str], ...]":
        base = "mounts"
    elif base not in _BASES:
        raise TypeError(f"Config.{field.name}: no config-file form for the type {text!r}")
    choices = field.metadata.get("choices")
    return FieldKind(
        name=field.name,
        base=base,
        optional=optional,
        octal=bool(field.metadata.get("octal")),
        choices=tuple(choices) if choices is not None else None,
    )


def _kinds() -> dict[str, FieldKind]:
    return {field.name: field_kind(field) for field in config_fields()}


def env_name(field_name: str) -> str:
    """The environment variable of a field: ``WSGIBRIDGE_`` and the name in upper case."""
    return ENV_PREFIX + field_name.upper()


def parse_octal(text: str) -> int:
    """An octal number written ``660`` or ``0o660`` (a file mode); ``ValueError`` if not."""
    digits = text.strip()
    digits = digits[2:] if digits[:2] in ("0o", "0O") else digits
    if not digits or not all(char in "01234567" for char in digits):
        raise ValueError(f"not an octal number: {text!r}")
    return int(digits, 8)


class _Refused(Exception):
    """A value of the wrong type or form; the text says what the key must be."""


# -- where a setting came from ----------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    """Where one setting came from: a file (and the key as written there), a variable, or
    the command line (``where`` empty)."""

    where: str = ""
    key: str = ""

    def prefix(self) -> str:
        """How an error line about this setting starts."""
        if not self.where:
            return ""
        if self.key:
            return f"{self.where}: key {self.key!r}: "
        return f"{self.where}: "

    def describe(self) -> str:
        """``from ...``, for a comment (one line: control characters become ``?``)."""
        where = self.where or "the command line"
        if self.key and self.where:
            where = f"{where} ({self.key})"
        return "from " + "".join(char if char.isprintable() else "?" for char in where)


def _refusal(origin: Origin, reason: str) -> ConfigSourceError:
    return ConfigSourceError(origin.prefix() + reason, source=origin.where)


# A layer of settings: field name -> (value, where it came from).
Settings = dict[str, tuple[Any, Origin]]


# -- values from TOML -------------------------------------------------------------------


def _show(value: Any) -> str:
    """A value as the TOML a user would have written, for an error message."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        try:
            return toml_value(value)
        except (TypeError, ValueError):
            return "an array of other things"
    try:
        return toml_value(value)
    except (TypeError, ValueError):
        return f"a {type(value).__name__}"  # a TOML date or time


def _toml_to_field(kind: FieldKind, value: Any) -> Any:
    """The field value for a TOML value, or :class:`_Refused`."""
    if kind.base == "bool":
        if isinstance(value, bool):
            return value
        raise _Refused(f"must be true or false, not {_show(value)}")
    if kind.base == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            if kind.octal and value > 0o777 and set(str(value)) <= set("01234567"):
                raise _Refused(
                    f"{value} is a decimal integer in TOML; write 0o{value} or"
                    f' "{value}" for the octal mode {value}'
                )
            return value
        if kind.octal and isinstance(value, str):
            try:
                return parse_octal(value)
            except ValueError:
                raise _Refused(f"must be an octal number, not {_show(value)}") from None
        expected = 'an integer (or an octal string, "660")' if kind.octal else "an integer"
        raise _Refused(f"must be {expected}, not {_show(value)}")
    if kind.base == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Refused(f"must be a number, not {_show(value)}")
    if kind.base == "str":
        if isinstance(value, str):
            return value
        raise _Refused(f"must be a string, not {_show(value)}")
    if kind.base == "mounts" and isinstance(value, dict):
        if all(isinstance(item, str) for item in value.values()):
            return tuple(value.items())
        raise _Refused(f"must be a table of strings or an array of strings, not {_show(value)}")
    # a tuple of strings (for mounts: PREFIX=DIR, which Config splits)
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise _Refused(f"must be an array of strings (or one string), not {_show(value)}")


def _check_choice(kind: FieldKind, value: Any) -> None:
    if kind.choices is not None and value not in kind.choices:
        listed = ", ".join(toml_string(choice) for choice in kind.choices)
        raise _Refused(f"must be one of {listed}, not {_show(value)}")


def from_toml(data: Mapping[str, Any], path: str) -> Settings:
    """The settings in a parsed TOML document read from ``path`` (named in errors)."""
    kinds = _kinds()
    settings: Settings = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        origin = Origin(path, key)
        kind = kinds.get(name)
        if kind is None:
            close = difflib.get_close_matches(name.lower(), list(kinds), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigSourceError(f"{path}: unknown key {key!r}{hint}", source=path)
        if name in settings:
            first = settings[name][1].key
            raise _refusal(origin, f"given twice (also as {first!r})")
        try:
            converted = _toml_to_field(kind, value)
            _check_choice(kind, converted)
        except _Refused as exc:
            raise _refusal(origin, str(exc)) from None
        settings[name] = (converted, origin)
    return settings


def _toml_module(path: str) -> ModuleType:
    """``tomllib`` (Python 3.11+), else ``tomli`` (its origin, same API), else a refusal."""
    for name in ("tomllib", "tomli"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    version = ".".join(str(part) for part in sys.version_info[:3])
    raise ConfigSourceError(
        f"{path}: reading a TOML config file needs Python 3.11 or later (tomllib) or the"
        f" tomli package, and this is Python {version}: pip install tomli, or give the"
        f" settings as options or {ENV_PREFIX}* environment variables",
        source=path,
    )


def load_toml(text: str, path: str) -> dict[str, Any]:
    """TOML ``text`` read from ``path`` as a dict; a refusal names ``path``."""
    toml = _toml_module(path)
    try:
        data: dict[str, Any] = toml.loads(text)
    except toml.TOMLDecodeError as exc:
        raise ConfigSourceError(f"{path}: not valid TOML: {exc}", source=path) from None
    return data


def parse_toml(text: str, path: str) -> Settings:
    """The settings in TOML ``text`` read from ``path`` (named in errors)."""
    return from_toml(load_toml(text, path), path)


def read_toml(path: str) -> Settings:
    """The settings in the TOML file at ``path``."""
    _toml_module(path)  # the missing parser is said before a missing file
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigSourceError(
            f"{path}: cannot read the config file: {reason}", source=path
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigSourceError(
            f"{path}: not UTF-8 text (byte {exc.start}); a TOML file is UTF-8", source=path
        ) from None
    return parse_toml(text, path)


# -- values from the environment and the command line -----------------------------------


def _text_to_field(kind: FieldKind, text: str) -> Any:
    """The field value for an environment variable's text, as the command line converts."""
    if kind.base == "bool":
        word = text.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise _Refused(f"must be 1/0, true/false, yes/no or on/off, not {toml_string(text)}")
    if kind.base == "int":
        try:
            return parse_octal(text) if kind.octal else int(text)
        except ValueError:
            expected = "an octal number" if kind.octal else "an integer"
            raise _Refused(f"must be {expected}, not {toml_string(text)}") from None
    if kind.base == "float":
        try:
            return float(text)
        except ValueError:
            raise _Refused(f"must be a number, not {toml_string(text)}") from None
    if kind.base == "str":
        return text
    return tuple(item.strip() for item in text.split(",") if item.strip())


def from_environ(environ: Mapping[str, str]) -> Settings:
    """The settings in ``WSGIBRIDGE_<FIELD>`` variables of ``environ``; other names are
    ignored."""
    settings: Settings = {}
    for name, kind in _kinds().items():
        variable = env_name(name)
        if variable not in environ:
            continue
        origin = Origin(f"environment variable {variable}")
        try:
            value = _text_to_field(kind, environ[variable])
            _check_choice(kind, value)
        except _Refused as exc:
            raise _refusal(origin, str(exc)) from None
        settings[name] = (value, origin)
    return settings


def from_command_line(values: Mapping[str, Any]) -> Settings:
    """Settings already converted by the argument parser (only the options given)."""
    return {name: (value, Origin()) for name, value in values.items()}


# -- layering ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """The effective configuration, and where each setting that is not a default came from."""

    config: Config
    origins: Mapping[str, Origin]


def _valid(values: Mapping[str, Any]) -> bool:
    try:
        Config(**values)
    except ValueError:
        return False
    return True


def _blame(settings: Settings, error: ValueError) -> ConfigSourceError:
    """The refusal of the setting that makes ``Config`` raise ``error``, named with its
    origin: the one without which the rest is valid (which also finds the setting that
    needs another, e.g. keyfile without certfile), else the first refused on its own."""
    values = {name: value for name, (value, _) in settings.items()}
    for name, (_, origin) in settings.items():
        if _valid({key: value for key, value in values.items() if key != name}):
            return _refusal(origin, str(error))
    for name, (value, origin) in settings.items():
        try:
            Config(**{name: value})
        except ValueError as exc:
            return _refusal(origin, str(exc))
    wheres = sorted({origin.where for _, origin in settings.values() if origin.where})
    if not wheres:
        return ConfigSourceError(str(error))
    return ConfigSourceError(f"{error} (settings from {', '.join(wheres)})", source=wheres[0])


def resolve(*layers: Settings) -> Loaded:
    """The Config from layers of settings, lowest precedence first; a later layer's
    setting replaces an earlier one's.  A value ``Config`` refuses is blamed on its key."""
    merged: Settings = {}
    for layer in layers:
        merged.update(layer)
    ordered: Settings = {
        field.name: merged[field.name] for field in config_fields() if field.name in merged
    }
    try:
        config = Config(**{name: value for name, (value, _) in ordered.items()})
    except ValueError as exc:
        raise _blame(ordered, exc) from None
    return Loaded(config, {name: origin for name, (_, origin) in ordered.items()})


def load(
    command_line: Mapping[str, Any],
    *,
    path: str | None,
    environ: Mapping[str, str],
) -> Loaded:
    """The effective configuration: the defaults, then the file at ``path`` (if any), then
    ``environ``'s variables, then the options given on the command line."""
    from_file = read_toml(path) if path is not None else {}
    return resolve(from_file, from_environ(environ), from_command_line(command_line))


# -- back to TOML -----------------------------------------------------------------------

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string (TOML 1.0: ``"``, ``\\`` and control characters
    escaped); a ``ValueError`` for a lone surrogate, which is not Unicode text."""
    out = []
    for char in text:
        escaped = _ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04X}")
        elif "\ud800" <= char <= "\udfff":
            raise ValueError(f"{text!r} is not valid Unicode text, which TOML needs")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any, *, octal: bool = False) -> str:
    """A bool, int, float, string, or a list or tuple of them, as a TOML value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"0o{value:o}" if octal and value >= 0 else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # "10.0", "1e-05": both TOML floats
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for a {type(value).__name__}")


def to_toml(config: Config, origins: Mapping[str, Origin] | None = None) -> str:
    """Every setting of ``config`` as a TOML document that :func:`parse_toml` reads back to
    an equal ``Config``.  Fields that are ``None`` are left out (TOML has no null; unset
    is their default); a setting in ``origins`` gets a comment saying where it came from."""
    origins = origins or {}
    lines = [
        "# wsgibridge settings: wsgibridge --config FILE reads them back; each key is an",
        "# option of wsgibridge --help. Settings that are unset (None) are left out.",
    ]
    for field in config_fields():
        value = getattr(config, field.name)
        if value is None:
            continue
        kind = field_kind(field)
        if kind.base == "mounts":
            pairs = ", ".join(f"{toml_string(key)} = {toml_string(item)}" for key, item in value)
            line = f"{field.name} = {{{pairs}}}"
        else:
            line = f"{field.name} = {toml_value(value, octal=kind.octal)}"
        origin = origins.get(field.name)
        if origin is not None:
            line += f"  # {origin.describe()}"
        lines.append(line)
    return "\n".join(lines) + "\n"
