"""Sockets, threads and processes: each module owns one kind of OS resource.

Rule: the protocol is decided in ``wsgibridge.http``; here it meets the
operating system.  Bind specs (``binds``), listening sockets (``listen``),
TLS (``tls``; the server's certificate files, read and re-read:
``certificates``), the handler that alone reads and writes a connection
(``handler``, with its socket half ``stream`` and one ``exchange`` per
request), a connection's life
outside its handler (``connection``), every poll/epoll object
(``readiness``), the reactor thread (``reactor``), the worker threads
(``pool``), the server that wires them (``server``), the process entry point
(``run``), pre-forked processes (``prefork``, what runs in each of them:
``workerprocess``, and reloading the app's code: ``reloader``) and a
server in a background thread (``background``).
"""
