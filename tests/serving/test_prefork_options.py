"""The recycling and reload options: validated in ``Config``, reaching it from the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wsgibridge import Config
from wsgibridge.cli import main
from wsgibridge.serving.run import uses_arbiter


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_requests": -1}, "max_requests must not be negative"),
        ({"max_worker_memory": -5}, "max_worker_memory must not be negative"),
        ({"max_requests_jitter": 3}, "max_requests_jitter needs max_requests"),
        ({"reload_extra": ("*.html",)}, "reload_extra needs reload"),
    ],
)
def test_bad_values_are_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Config(**options)


def test_reload_extra_becomes_a_tuple() -> None:
    config = Config(reload=True, reload_extra=["a/*.txt"])  # type: ignore[arg-type]
    assert config.reload_extra == ("a/*.txt",)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, False),
        ({"workers": 2}, True),
        ({"max_requests": 100}, True),
        ({"max_worker_memory": 512}, True),
        ({"reload": True}, True),
    ],
)
def test_one_worker_runs_under_the_arbiter_when_recycling_or_reload_is_asked(
    options: dict[str, Any], expected: bool
) -> None:
    assert uses_arbiter(Config(**options)) is expected


class RecordingServe:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, Config, dict[str, Any]]] = []

    def __call__(self, app: Any, *, config: Config, **extra: Any) -> None:
        self.calls.append((app, config, extra))


def test_the_options_reach_the_config_and_a_loader_the_arbiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "optapp.py").write_text("def app(environ, start_response):\n    return []\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    serve = RecordingServe()
    argv = [
        "--max-requests", "500", "--max-requests-jitter", "50", "--max-worker-memory", "300",
        "--reload", "--reload-extra", "templates/*.html", "--reload-extra", "*.toml",
        "optapp:app",
    ]  # fmt: skip
    assert main(argv, serve=serve) == 0
    [(_, config, extra)] = serve.calls
    assert (config.max_requests, config.max_requests_jitter) == (500, 50)
    assert config.max_worker_memory == 300 and config.reload is True
    assert config.reload_extra == ("templates/*.html", "*.toml")
    loaded = extra["loader"]()
    assert loaded.__name__ == "app" and loaded.__module__ == "optapp"
    # One process without an arbiter: no loader (nothing to reload).
    assert main(["optapp:app"], serve=serve) == 0
    assert serve.calls[1][2] == {}
