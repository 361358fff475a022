"""The WSGI app that bench/http/run.sh serves with gunicorn.

GET / (any path) -> 200, text/plain; charset=utf-8, "Hello from <pid>\n": the same
body as the C# server and nginx in that benchmark (17 bytes for a 5-digit pid), and the
pid lets the script count how requests spread over the workers.
"""
import os


def app(environ, start_response):
    body = b"Hello from %d\n" % os.getpid()
    start_response("200 OK", [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
    ])
    return [body]
