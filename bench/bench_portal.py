"""Portal benchmark: splash requests/s on one uvicorn worker, and login->authorised
latency p50/p99, each beside nginx serving the same HTML on this machine (ratio).

The portal is the real `captive-portal` process; behind its socket is the REAL agent
(tests/unit/real_agent.py: AgentHandler over SessionService on an in-memory SQLite, a
recording kernel) in this process, so every splash request includes the real whoami round
trip over the UNIX socket and every login the agent's own voucher and session code.
Load: wrk (Debian package) when present, else an asyncio httpx loop.

    .venv/bin/python bench/bench_portal.py
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_agent.config import validate_config  # noqa: E402
from lab.broker import free_port  # noqa: E402
from tests.unit.real_agent import AgentThread, FakeClock, RealAgent, config_dict  # noqa: E402

DURATION_S = 8
CONNECTIONS = 32
LOGINS = 200
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def wait_http(url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


def start_nginx(workdir: Path, html: str, port: int) -> subprocess.Popen[bytes]:
    www = workdir / "www"
    www.mkdir()
    for d in (workdir, www):  # nginx's worker runs as nobody when started by root
        d.chmod(0o755)
    (www / "index.html").write_text(html, encoding="utf-8")
    conf = workdir / "nginx.conf"
    conf.write_text(
        f"""worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/tmp; proxy_temp_path {workdir}/tmp;
  fastcgi_temp_path {workdir}/tmp; uwsgi_temp_path {workdir}/tmp; scgi_temp_path {workdir}/tmp;
  server {{
    listen 127.0.0.1:{port};
    root {www};
    location / {{ default_type text/html; add_header Cache-Control no-store; }}
  }}
}}
"""
    )
    (workdir / "tmp").mkdir()
    return subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
        stderr=subprocess.DEVNULL,
    )


def wrk_rps(url: str) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{DURATION_S}s", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not m or errors:
        raise SystemExit(f"wrk: unexpected output for {url}:\n{out}")
    return float(m.group(1))


async def httpx_rps(url: str) -> float:
    count = 0
    deadline = time.monotonic() + DURATION_S

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal count
        while time.monotonic() < deadline:
            r = await client.get(url)
            r.raise_for_status()
            count += 1

    limits = httpx.Limits(max_connections=CONNECTIONS)
    async with httpx.AsyncClient(limits=limits) as client:
        t0 = time.monotonic()
        await asyncio.gather(*(worker(client) for _ in range(CONNECTIONS)))
        return count / (time.monotonic() - t0)


def rps(url: str) -> tuple[float, str]:
    if shutil.which("wrk"):
        return wrk_rps(url), "wrk"
    return asyncio.run(httpx_rps(url)), "httpx"


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1]


async def login_latencies(base: str, agent: RealAgent) -> list[float]:
    """POST /login with a fresh voucher, then poll the Android probe until it says 204."""
    out = []
    async with httpx.AsyncClient(base_url=base) as c:
        for _ in range(LOGINS):
            code = agent.issue("heure")  # a code the caretaker would print
            m = _CSRF.search((await c.get("/")).text)
            assert m
            t0 = time.perf_counter()
            r = await c.post("/login", data={"method": "voucher", "code": code, "csrf": m[1]})
            assert r.status_code == 200, r.text[:200]
            while (await c.get("/generate_204")).status_code != 204:
                pass
            out.append(time.perf_counter() - t0)
            m = _CSRF.search(r.text)
            assert m
            await c.post("/logout", data={"csrf": m[1]})
    return out


async def static_latencies(url: str) -> list[float]:
    out = []
    async with httpx.AsyncClient() as c:
        for _ in range(LOGINS):
            t0 = time.perf_counter()
            (await c.get(url)).raise_for_status()
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="relais-bench-portal-"))
    sock = workdir / "agent.sock"
    data = config_dict(sock, login_attempts=100)
    cfg = workdir / "hub.yaml"
    cfg.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    agent = RealAgent(validate_config(data), {"127.0.0.1": "02:00:00:00:0c:01"}, FakeClock())
    pport, nport = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with agent, AgentThread(sock, agent):
            portal = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "captive-portal"),
                    "--config",
                    str(cfg),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(pport),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(portal)
            base = f"http://127.0.0.1:{pport}"
            wait_http(base + "/")
            html = httpx.get(base + "/").text
            procs.append(start_nginx(workdir, html, nport))
            nginx = f"http://127.0.0.1:{nport}/"
            wait_http(nginx)

            portal_rps, tool = rps(base + "/")
            nginx_rps, _ = rps(nginx)
            logins = asyncio.run(login_latencies(base, agent))
            statics = asyncio.run(static_latencies(nginx))
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            p.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)

    kb = len(html.encode()) / 1024
    print(f"splash page: {kb:.1f} KB, {CONNECTIONS} connections, {DURATION_S} s each ({tool})")
    print(f"  portal (1 uvicorn worker, whoami per request): {portal_rps:8.0f} req/s")
    print(f"  nginx (1 worker, same HTML as a static file):   {nginx_rps:8.0f} req/s")
    print(f"  ratio portal/nginx: {portal_rps / nginx_rps:.3f}")
    lp50, lp99 = pct(logins, 50) * 1000, pct(logins, 99) * 1000
    sp50, sp99 = pct(statics, 50) * 1000, pct(statics, 99) * 1000
    print(f"login -> authorised (POST /login until /generate_204 = 204), {LOGINS} logins:")
    print(f"  portal p50 {lp50:6.2f} ms   p99 {lp99:6.2f} ms")
    print(f"  nginx one static GET: p50 {sp50:6.2f} ms   p99 {sp99:6.2f} ms")
    print(f"  ratio p50 {lp50 / sp50:.1f}x   p99 {lp99 / sp99:.1f}x")


if __name__ == "__main__":
    main()
