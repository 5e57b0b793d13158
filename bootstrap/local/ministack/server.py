"""MiniStack's ASGI app served by uvicorn (httptools, uvloop) with MiniStack's own settings, or by
MiniStack's own server (hypercorn + h11) where uvicorn cannot keep them (HTTPS) or is missing.
Patches nothing; no upstream proposal (docs/emulator-notes.md, the row on hypercorn)."""

from __future__ import annotations

import contextlib
import os

from bootstrap.local.ministack import durability

# MiniStack's own server settings (`ministack.app.main`), kept when serving through uvicorn.
KEEP_ALIVE_SECONDS = 75


GRACEFUL_SHUTDOWN_SECONDS = 3  # hypercorn's default graceful timeout


def uvicorn_settings() -> dict | None:
    """How to serve MiniStack's ASGI app with uvicorn (C HTTP parser and event loop), or None to
    keep MiniStack's own server (hypercorn + h11).

    MiniStack is an ASGI app and its detached mode already runs it under a server of choice
    (`hypercorn ministack.app:app`). Per request, hypercorn with the pure-Python h11 parser cost
    more emulator CPU than many handlers: 1.29-1.55 ms per 25-item BatchWriteItem against 0.65 ms
    in the handler itself; under uvicorn with httptools and uvloop 0.88 ms (docs/performance.md,
    round ten). MiniStack's settings are kept: its bind address and port, keep-alive 75 s, the
    lifespan (startup, and the state saved on shutdown), its own log set-up, one Date header (the
    app adds it; uvicorn's would be a second), no Server header and no X-Forwarded-* rewriting.
    HTTPS (USE_SSL) and a missing uvicorn or httptools keeps MiniStack's own server."""
    import importlib.util

    from ministack.core import tls

    if tls.use_ssl_enabled() or not all(importlib.util.find_spec(name) for name in ("uvicorn", "httptools")):
        return None
    from ministack.app import _resolve_port

    # uvloop has no Windows build; asyncio's own loop there (1.01 ms in the same measurement).
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return dict(
        host=os.environ.get("BIND_HOST", "0.0.0.0"),
        port=int(_resolve_port()),
        loop=loop,
        http="httptools",
        lifespan="on",
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        date_header=False,
        server_header=False,
        # hypercorn leaves the client address and scheme as the socket gives them, and MiniStack
        # reads X-Forwarded-Proto itself: uvicorn's rewriting from X-Forwarded-* stays off.
        proxy_headers=False,
        access_log=False,
        log_config=None,
        log_level=os.environ.get("LOG_LEVEL", "INFO").lower(),
    )


def serve() -> None:
    settings = uvicorn_settings()
    if settings is None:
        from ministack.app import main

        main()
        durability.stopped_cleanly()
        return
    import uvicorn
    from ministack.app import _pid_file, app

    # As MiniStack's main: the soft limit on open files raised to the hard one (connection bursts),
    # and, as there, no failure where that cannot be done (no `resource` on Windows, a container
    # that refuses it).
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass
    # The file `ministack --stop` reads, written and removed as MiniStack's main does.
    pid_file = _pid_file(settings["port"])
    with open(pid_file, "w") as f:
        f.write(str(os.getpid()))
    try:
        uvicorn.run(app, **settings)
        durability.stopped_cleanly()
    finally:
        with contextlib.suppress(OSError):
            os.remove(pid_file)
