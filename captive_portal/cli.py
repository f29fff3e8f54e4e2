"""`captive-portal --config PATH [--host H] [--port P]`: the portal under uvicorn.

Without ``--host``/``--port`` it listens on the LAN address (and on its IPv6 address when
the config has one: nftables sends a captive phone's IPv6 web requests there) and
``portal.http_port`` of the config the agent enforces, and moves there when a pushed config
changes them.

Runs as an unprivileged user: it only listens on its ports and talks to the agent's
socket. With ``portal.tls_cert``/``tls_key`` and ``portal.https_port`` set it serves the
same app over HTTPS too (RFC 8908 wants the API over TLS), in the same process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Generator, Sequence
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from captive_portal.app import create_app
from captive_portal.live_config import LiveConfig, read_view
from captive_portal.quick_http import quick_protocol
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


def server_configs(
    config: HubConfig, app: FastAPI, host: str | Sequence[str], port: int
) -> list[uvicorn.Config]:
    """The HTTP listener, and the HTTPS one when the config has a certificate, on each host."""
    hosts = (host,) if isinstance(host, str) else tuple(host)
    p = config.portal
    ports: list[tuple[int, str | None, str | None]] = [(port, None, None)]  # port, cert, key
    if p.tls_cert is not None and p.tls_key is not None and p.https_port is not None:
        ports.append((p.https_port, str(p.tls_cert), str(p.tls_key)))
    # what a captive crowd asks again and again, answered without an asyncio task
    http = quick_protocol(app.state.quick)
    return [
        uvicorn.Config(
            app,
            host=h,
            port=n,
            ssl_certfile=cert,
            ssl_keyfile=key,
            http=http,
            proxy_headers=False,
            server_header=False,
            access_log=False,
            log_level="info",
        )
        for n, cert, key in ports
        for h in hosts
    ]


def listen_on(config: HubConfig, host: str | None, port: int | None) -> tuple[tuple[str, ...], int]:
    """Where the portal listens: the flags when given, else the LAN addresses (IPv4, and
    IPv6 when the config has one) and http_port."""
    port = port or config.portal.http_port
    if host:
        return (host,), port
    lan = config.network.lan
    v6 = () if lan.address6 is None else (str(lan.address6.ip),)
    return (str(lan.address.ip), *v6), port


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unbindable(configs: list[uvicorn.Config], serving: set[tuple[str, int]]) -> str | None:
    """Why one of the listeners in ``configs`` cannot listen now (None: all can). Those
    already ``serving`` are not tried: they are freed and taken again on the move."""
    for c in configs:
        if (c.host, c.port) in serving:
            continue
        family = socket.AF_INET6 if ":" in c.host else socket.AF_INET
        try:
            socket.create_server((c.host, c.port), family=family).close()
        except OSError as e:
            return f"cannot listen on {_where(c.host, c.port)} ({e.strerror or e})"
    return None


class Listeners:
    """The portal's servers, moved where a followed config says when they can listen there
    (same app, same process: its device cache, form key and caretaker sessions stay). A
    move that cannot bind leaves them serving where they are: uvicorn would exit instead,
    and systemd would restart the portal into the same failure, again and again."""

    def __init__(self, make: Callable[[HubConfig], list[uvicorn.Config]], config: HubConfig):
        self.make = make
        self.target = config
        self.servers: list[_Server] = []
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True
        for s in self.servers:
            s.should_exit = True

    def move(self, config: HubConfig) -> str | None:
        """Serve where ``config`` says (None), or why not (the servers stay)."""
        serving = {(s.config.host, s.config.port) for s in self.servers}
        why = unbindable(self.make(config), serving)
        if why is not None:
            where = ", ".join(_where(h, p) for h, p in sorted(serving))
            return f"{why}; still serving on {where}"
        self.target = config
        for s in self.servers:
            s.should_exit = True
        return None

    async def run(self) -> None:
        while not self.stopping:
            configs = self.make(self.target)
            self.servers[:] = [_Server(c) for c in configs]
            for c in configs:
                scheme = "https" if c.ssl_certfile else "http"
                log.info("portal listening on %s://%s/", scheme, _where(c.host, c.port))
            await asyncio.gather(*(s.serve() for s in self.servers))


async def serve(
    make: Callable[[HubConfig], list[uvicorn.Config]], config: HubConfig, live: LiveConfig | None
) -> None:
    """Serve ``make(config)``'s listeners until SIGINT or SIGTERM, following ``live``."""
    listeners = Listeners(make, config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, listeners.stop)
    if live is not None:
        live.on_listen = listeners.move
    await listeners.run()


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
            # with --host the portal listens there only: no redirect to its IPv6 address
            return build_settings(c, extra_hosts=extra, listen_port=args.port, ipv6=not args.host)

        app = create_app(
            config,
            settings=rebuild(config),
            secret_file=args.secret_file,
            follow=(view, rebuild),
        )
    except (ConfigError, SettingsError, ValueError, OSError) as e:
        fail(str(e))
    portal: Portal = app.state.portal

    def listeners(c: HubConfig) -> list[uvicorn.Config]:
        return server_configs(c, app, *listen_on(c, args.host, args.port))

    # uvloop when installed (uvicorn's "auto" loop, as `uvicorn` itself would run): a
    # captive crowd's requests cost the portal less CPU (bench/bench_portal.py)
    start = portal.settings.config
    with asyncio.Runner(loop_factory=listeners(start)[0].get_loop_factory()) as runner:
        runner.run(serve(listeners, start, app.state.live_config))


if __name__ == "__main__":
    main()
