"""HTTP/1.1 and PEP 3333 as values: bytes and values in, bytes and values out.

Rule: nothing here touches a socket, a thread or a poller (``tests/test_layers.py``
checks it), so every module is tested in memory: the grammar, where each rule
is spelled once (``grammar``), the request head parser (``parser``), the body
streams (``body``) over the connection's byte buffer (``reader``), the environ
(``environ``), forwarded headers (``forwarded``), the PROXY protocol header
(``proxy_protocol``), response framing, header checks and the one
error-response builder (``response``), the file wrapper.
"""
