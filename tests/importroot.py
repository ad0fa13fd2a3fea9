"""Where the wsgibridge under test was imported from: what a child process puts on PYTHONPATH.

The checkout in the usual run (the editable install); the installed build's
site-packages in the compiled run of ``.ci/run``, so that a child runs the
build the suite is testing (the checkout first on its path would hide it).
"""

from __future__ import annotations

from pathlib import Path

import wsgibridge

IMPORT_ROOT = str(Path(wsgibridge.__file__).resolve().parent.parent)
