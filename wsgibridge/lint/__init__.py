"""A strict PEP 3333 lint: a WSGI middleware that checks both sides of the interface as
requests run, and reports each mistake with the request, the rule broken and the fix.

Rule: the lint reports and changes nothing.  Every value that crosses the
interface goes on unchanged, the app's exceptions propagate, and the lint
itself never raises because of what it is given.  One job a module:
:mod:`.rules` (the rules as data: :data:`RULES`, :class:`Rule`,
:class:`LintViolation`, :class:`WSGILintWarning`), :mod:`.describe` (values,
code and the request as text for a report), :mod:`.state` (one request: what
the lint knows, the violations found), :mod:`.checks` (the environ, a status,
headers, exc_info), :mod:`.wrappers` (the checked streams, ``start_response``,
``write`` and result) and :mod:`.middleware` (:class:`LintMiddleware`,
:func:`default_report`, :func:`log_report`).

``LintMiddleware(app)`` sits between a server (any server: wsgibridge, wsgiref,
webtest...) and an application (or a stack of middleware).  Like
:mod:`wsgiref.validate` it wraps everything that crosses the interface -
``environ`` and its ``wsgi.input`` / ``wsgi.errors`` streams, ``start_response``,
the ``write`` callable and the returned iterable - but where the validator
asserts and stops, the lint *reports* (one :class:`LintViolation` per distinct
mistake per request, to the ``report`` callable) and lets the request go on:

* what a correct app does is never changed, and for an incorrect one its
  (wrong) values go to the server unchanged, so the server answers the way it
  would without the lint (wsgibridge: a 500 for a bad status or header);
* the app's exceptions are never swallowed, and the lint never raises because
  of garbage it is given (a failing check is logged as a lint bug, on the
  ``wsgibridge.lint`` logger, and skipped);
* ``report`` is called synchronously, in the thread where the mistake
  happened; an exception from it propagates to whoever called the checked
  callable (a ``report`` that raises stops the request at the mistake, the way
  :mod:`wsgiref.validate` does).

Who is at fault is part of each message: "app side" rules name the code below
the lint that broke them (the function that called ``start_response`` or
``write``, the generator that yielded); "server side" rules (``environ-*``,
``close-*``, ``iterate-after-close``, ``input-not-bytes``,
``start-response-no-write``) name the code that called the lint - the server,
or a middleware between the server and the lint.  To check each layer of a
stack, wrap each layer: ``LintMiddleware(mw1(LintMiddleware(mw2(LintMiddleware(app)))))``.

What is passed through untouched, so that the server's fast paths still apply:
a ``list`` or ``tuple`` result (checked completely when the app returns: it
cannot run code later) and an instance of ``environ["wsgi.file_wrapper"]``
(returned as is so the server can still use ``sendfile``; its body is not
counted).  Any other iterable is returned wrapped in a proxy.

``close-not-called`` - how it is detected: the proxy around the app's iterable
records ``close()``.  When the proxy is garbage-collected and its ``close()``
was never called (and the app's iterable has a ``close`` method), the
violation is reported from ``__del__``.  On CPython this happens as soon as
the server (or the middleware that consumed the iterable) drops its last
reference, so it is reliable and prompt unless the proxy ends up in a
reference cycle (then at the next garbage collection); on other interpreters
it happens whenever the collector runs.  For a deterministic check,
:meth:`LintMiddleware.check_closed` reports every iterable still alive and not
closed: call it when no request is in flight (a test fixture's teardown, after
the server has stopped).

Not flagged, because PEP 3333 allows it: a generator that calls
``start_response`` on its first iteration; ``start_response`` called again
with ``exc_info`` before any body byte; an empty result; ``write()`` before the
app returns; a body on a HEAD response (the server drops it); a response
without ``Content-Type`` (RFC 9110 §8.3 makes it a SHOULD with an exception
for an unknown media type); probing ``wsgi.input`` / ``wsgi.errors`` with
``hasattr`` or ``getattr(..., default)`` (the proxies raise ``AttributeError``
for anything PEP 3333 does not give, so the probe takes its portable branch,
but only direct use, such as ``wsgi_input.seek(0)``, is reported).

Every rule, its reference and its fix are in :data:`RULES`.
"""

from .middleware import LintMiddleware, default_report, log_report
from .rules import RULES, LintViolation, Rule, WSGILintWarning

__all__ = [
    "RULES",
    "LintMiddleware",
    "LintViolation",
    "Rule",
    "WSGILintWarning",
    "default_report",
    "log_report",
]
