"""Content serving and resume: the library's path against plain nginx, in the same run.

    .venv/bin/python bench/bench_content.py [--mb 200] [--clients 8] [--rounds 2]

1. Serving: one file (200 MB) fetched by 8 concurrent clients (curl), from
   - the library's path: the nginx the agent runs, on its generated config
     (hub_agent.content.nginx.render_config: sendfile, tcp_nopush, access log for hits);
   - the baseline: plain nginx as Debian ships it (sendfile on, default log format);
   - for context, Starlette's FileResponse under uvicorn (what a Python-only path costs).
   Ratio: library / nginx (target >= 0.8). Rounds alternate; each path's median round counts.
2. Resume: the hub downloads the file from a local upstream with bounded Range requests
   (hub_agent.content.fetch); the connection is cut at half-way (server side shut down,
   as when the uplink drops); the download resumes. Overhead = bytes the upstream sent
   beyond the file's size (what a cut costs), against one Range chunk (the bound).
All traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from hub_agent.config import ContentItem  # noqa: E402
from hub_agent.content.fetch import FetchError, fetch, range_chunk_for  # noqa: E402
from hub_agent.content.nginx import NginxPlan, NginxServer, nginx_binary  # noqa: E402
from lab import upstream_http  # noqa: E402
from lab.broker import free_port  # noqa: E402

PY = sys.executable


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def make_file(path: Path, mb: int) -> str:
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(mb):
            chunk = block[i % 997 :] + block[: i % 997]  # distinct MiBs, cheaply
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def plain_nginx_conf(root: Path, run: Path, port: int) -> str:
    """Debian's stock nginx.conf, reduced to one static server (the baseline)."""
    return f"""worker_processes auto;
pid {run}/nginx.pid;
error_log {run}/error.log;
events {{ worker_connections 768; }}
http {{
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {run}/access.log;
    client_body_temp_path {run}/body; proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fcgi; uwsgi_temp_path {run}/uwsgi; scgi_temp_path {run}/scgi;
    server {{ listen 127.0.0.1:{port}; root {root}; }}
}}
"""


def fetch_all(url: str, clients: int, size: int) -> float:
    """Seconds for ``clients`` concurrent curls to each fetch the whole file."""
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}", url],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(clients)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    elapsed = time.monotonic() - t0
    bad = [o for o in outs if o.strip() != str(size)]
    if bad:
        raise RuntimeError(f"incomplete downloads: {bad}")
    return elapsed


STARLETTE_APP = """
import os
from starlette.applications import Starlette
from starlette.responses import FileResponse
from starlette.routing import Route
path = os.environ["BENCH_FILE"]
async def big(request):
    return FileResponse(path)
app = Starlette(routes=[Route("/big.bin", big)])
"""


def bench_serving(args: argparse.Namespace, work: Path, size: int) -> dict[str, float]:
    content = work / "content"
    files = content / "files" / "bench"
    files.mkdir(parents=True)
    big = files / "big.bin"
    os.replace(work / "big.bin", big)

    ours_port, plain_port, star_port = free_port(), free_port(), free_port()
    ours = NginxServer(
        NginxPlan(
            content_root=content,
            run_dir=work / "run-ours",
            listen=(f"127.0.0.1:{ours_port}",),
            portal_url="http://127.0.0.1/content/",
            user="root" if os.geteuid() == 0 else None,
        )
    )
    ours.start()
    plain_run = work / "run-plain"
    plain_run.mkdir()
    conf = plain_run / "nginx.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(user + plain_nginx_conf(content, plain_run, plain_port))
    binary = nginx_binary()
    assert binary is not None
    plain = subprocess.Popen(
        [binary, "-p", str(plain_run), "-c", str(conf), "-e", f"{plain_run}/error.log",
         "-g", "daemon off;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # like the agent's nginx: same scheduler autogroup treatment
    )  # fmt: skip
    app_py = work / "star_app.py"
    app_py.write_text(STARLETTE_APP)
    star = subprocess.Popen(
        [PY, "-m", "uvicorn", "--app-dir", str(work), "star_app:app", "--host", "127.0.0.1",
         "--port", str(star_port), "--log-level", "warning", "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(work), "BENCH_FILE": str(big)},
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_port(ours_port)
        wait_port(plain_port)
        paths = {
            "library": f"http://127.0.0.1:{ours_port}/files/bench/big.bin",
            "nginx": f"http://127.0.0.1:{plain_port}/files/bench/big.bin",
        }
        fetch_all(paths["library"], 1, size)  # warm the page cache
        runs: dict[str, list[float]] = {name: [] for name in paths}
        for r in range(args.rounds):  # ABBA order, so drifting background load hits both alike
            order = list(paths.items()) if r % 2 == 0 else list(paths.items())[::-1]
            for name, url in order:
                t = fetch_all(url, args.clients, size)
                runs[name].append(args.clients * size / t / 1e6)
            print(f"  round {r + 1}: " + ", ".join(
                f"{n} {v[-1]:.0f} MB/s" for n, v in runs.items()), flush=True)  # fmt: skip
        best = {name: statistics.median(v) for name, v in runs.items()}
        if not args.no_starlette:
            try:
                wait_port(star_port)
                t = fetch_all(f"http://127.0.0.1:{star_port}/big.bin", args.clients, size)
                best["starlette"] = args.clients * size / t / 1e6
                print(f"  once    starlette {best['starlette']:8.0f} MB/s  ({t:.2f} s)")
            except RuntimeError as e:
                print(f"  starlette: skipped ({e})")
        return best
    finally:
        ours.stop()
        plain.terminate()
        star.terminate()
        for p in (plain, star):
            p.wait(10)


class CutHandler(upstream_http.Handler):
    """The lab's upstream, dropping the connection once mid-transfer like a failing uplink.

    The drop is a TCP reset: whatever the server had written but the hub had not read yet
    is lost, yet counted as sent, exactly what a cut costs on a real link.
    """

    cut_after = 0
    did_cut = False

    def _count(self, n: int) -> None:
        super()._count(n)
        if not CutHandler.did_cut and upstream_http.SENT["bytes"] >= CutHandler.cut_after:
            CutHandler.did_cut = True
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            raise ConnectionResetError("uplink cut")

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()


def bench_resume(work: Path, size: int, digest: str, cap_kbit: int) -> dict[str, Any]:
    root = work / "content" / "files" / "bench"
    port = free_port()
    os.chdir(root)
    server = ThreadingHTTPServer(("127.0.0.1", port), CutHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    item = ContentItem(
        id="bench", title={"fr": "bench"}, kind="video",
        url=f"http://127.0.0.1:{port}/big.bin", size=size, sha256=digest,
    )  # fmt: skip
    chunk = range_chunk_for(cap_kbit * 1000 / 8)
    CutHandler.cut_after = size // 2 + chunk // 2  # in the middle of one Range request
    part = work / "bench.part"

    async def run() -> int:
        attempts = 0
        async with httpx.AsyncClient(timeout=10) as client:
            while True:
                attempts += 1
                try:
                    await fetch(client, item, part, None, lambda p: None, range_chunk=chunk)
                    return attempts
                except FetchError as e:
                    if attempts > 5:
                        raise
                    on_disk = part.stat().st_size
                    print(f"  cut: {e}; {on_disk:,} bytes on disk; resuming from there")

    upstream_http.SENT["bytes"] = 0
    attempts = asyncio.run(run())
    server.shutdown()
    sent = upstream_http.SENT["bytes"]
    ok = hashlib.sha256(part.read_bytes()).hexdigest() == digest
    return {
        "sent": sent,
        "overhead": sent - size,
        "chunk": chunk,
        "attempts": attempts,
        "ok": ok,
        "cut": CutHandler.did_cut,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--cap-kbit", type=int, default=2000, help="sets the Range chunk size")
    ap.add_argument("--no-starlette", action="store_true")
    args = ap.parse_args()
    if nginx_binary() is None or shutil.which("curl") is None:
        raise SystemExit("needs nginx-light and curl (scripts/install-deps.sh)")
    work = Path(tempfile.mkdtemp(prefix="relais-bench-content-"))
    try:
        digest = make_file(work / "big.bin", args.mb)
        size = args.mb << 20
        print(f"serving {args.mb} MiB to {args.clients} concurrent clients, {args.rounds} rounds")
        best = bench_serving(args, work, size)
        ratio = best["library"] / best["nginx"]
        print(f"library path: {best['library']:.0f} MB/s; plain nginx: {best['nginx']:.0f} MB/s")
        print(f"RATIO library/nginx = {ratio:.2f}  (target >= 0.8)")
        if "starlette" in best:
            print(f"      starlette/nginx = {best['starlette'] / best['nginx']:.2f}  (context)")
        print("resume after a cut at half-way (bounded Range requests):")
        res = bench_resume(work, size, digest, args.cap_kbit)
        print(
            f"RESUME overhead = {res['overhead']:,} bytes beyond {size:,} "
            f"(one Range chunk = {res['chunk']:,} bytes at {args.cap_kbit} kbit/s); "
            f"attempts {res['attempts']}; sha256 {'ok' if res['ok'] else 'MISMATCH'}"
            + ("" if res["cut"] else " (the cut did not happen!)")
        )
    finally:
        os.chdir("/")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
