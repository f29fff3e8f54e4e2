"""`captive-portal --config PATH [--host H] [--port P]`: the portal under uvicorn.

Without ``--host``/``--port`` it listens on the LAN address and ``portal.http_port`` of
the config the agent enforces, and moves there when a pushed config changes them.

Runs as an unprivileged user: it only listens on its ports and talks to the agent's
socket. With ``portal.tls_cert``/``tls_key`` and ``portal.https_port`` set it serves the
same app over HTTPS too (RFC 8908 wants the API over TLS), in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import uvicorn

from captive_portal.app import create_app
from captive_portal.live_config import LiveConfig, read_view
from captive_portal.services import Portal
from captive_portal.settings import Settings, SettingsError, build_settings
from hub_agent.clikit import fail, parser
from hub_agent.config import ConfigError, HubConfig, load_config
from hub_agent.portal_view import portal_view_path

log = logging.getLogger("captive_portal")


class _Server(uvicorn.Server):
    """Signals are handled once for both listeners, not by each server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server_configs(config: HubConfig, app: object, host: str, port: int) -> list[uvicorn.Config]:
    common = {"proxy_headers": False, "server_header": False, "access_log": False}
    out = [uvicorn.Config(app, host=host, port=port, log_level="info", **common)]  # type: ignore[arg-type]
    p = config.portal
    if p.tls_cert is not None and p.tls_key is not None and p.https_port is not None:
        out.append(
            uvicorn.Config(
                app,  # type: ignore[arg-type]
                host=host,
                port=p.https_port,
                ssl_certfile=str(p.tls_cert),
                ssl_keyfile=str(p.tls_key),
                log_level="info",
                **common,  # type: ignore[arg-type]
            )
        )
    return out


def listen_on(config: HubConfig, host: str | None, port: int | None) -> tuple[str, int]:
    """Where the portal listens: the flags when given, else the LAN address and http_port."""
    return host or str(config.network.lan.address.ip), port or config.portal.http_port


async def serve(make: Callable[[], list[uvicorn.Config]], live: LiveConfig | None) -> None:
    """Serve ``make()``'s listeners; when the followed config moves the LAN address or a
    port, stop them and serve again where ``make()`` now says (same app, same process: its
    device cache, form key and caretaker sessions stay)."""
    servers: list[_Server] = []
    stopping = False
    loop = asyncio.get_running_loop()

    def stop() -> None:
        nonlocal stopping
        stopping = True
        for s in servers:
            s.should_exit = True

    def move(_: HubConfig) -> None:
        for s in servers:
            s.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    if live is not None:
        live.on_listen = move
    while not stopping:
        configs = make()
        servers[:] = [_Server(c) for c in configs]
        for c in configs:
            scheme = "https" if c.ssl_certfile else "http"
            log.info("portal listening on %s://%s:%s/", scheme, c.host, c.port)
        await asyncio.gather(*(s.serve() for s in servers))


def main(argv: Sequence[str] | None = None) -> None:
    p = parser("captive-portal", "Relais captive portal (FastAPI under uvicorn).")
    p.add_argument("--config", type=Path, required=True, help="hub config YAML")
    p.add_argument("--host", default=None, help="listen address (default: the LAN address)")
    p.add_argument("--port", type=int, default=None, help="listen port (default: portal.http_port)")
    p.add_argument(
        "--secret-file",
        type=Path,
        default=None,
        help="key signing form tokens (created 0600 if missing); default: a new key per start",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config)
        # the agent's copy of what it enforces wins when it is as new (a pushed config)
        view = portal_view_path(config)
        found = read_view(view)
        if found is not None and found[1].version >= config.version:
            config = found[1]
        extra = (args.host,) if args.host else ()

        def rebuild(c: HubConfig) -> Settings:
            return build_settings(c, extra_hosts=extra, listen_port=args.port)

        app = create_app(
            config,
            settings=rebuild(config),
            secret_file=args.secret_file,
            follow=(view, rebuild),
        )
    except (ConfigError, SettingsError, ValueError, OSError) as e:
        fail(str(e))
    portal: Portal = app.state.portal

    def listeners() -> list[uvicorn.Config]:
        current = portal.settings.config  # the followed config
        return server_configs(current, app, *listen_on(current, args.host, args.port))

    # uvloop when installed (uvicorn's "auto" loop, as `uvicorn` itself would run): a
    # captive crowd's requests cost the portal less CPU (bench/bench_portal.py)
    with asyncio.Runner(loop_factory=listeners()[0].get_loop_factory()) as runner:
        runner.run(serve(listeners, app.state.live_config))


if __name__ == "__main__":
    main()
