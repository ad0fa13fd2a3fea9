"""``python -m wsgibridge``: the same as the ``wsgibridge`` command."""

from .cli import main

raise SystemExit(main())
