"""A device whose data plan is used up still fetches the library, and it costs it nothing.

The real enforcement (hub_agent.enforce, nftables in the hub namespace) runs with the
example config: the hub's own address is zero-rated and the content port is open to the
LAN, so the library stays reachable with the quota at zero, and even after deauth.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_agent.enforce.enforcer import Enforcer
from hub_agent.enforce.model import DesiredState
from lab.netns import UPSTREAM, Lab
from tests.conftest import require_lab
from tests.linux.test_content_support import (
    Serving,
    curl,
    item,
    put_upstream,
    run_sync,
    write_config,
)
from tests.linux.test_enforce_helpers import grant, lab_config, reaches

pytestmark = pytest.mark.root


@pytest.fixture
def enforced_lab() -> Iterator[Lab]:
    require_lab()
    with Lab.create(clients=1, nat=False) as built:  # the enforcer does the NAT
        yield built


def test_used_up_plan_still_fetches_the_library_uncounted(
    enforced_lab: Lab, tmp_path: Path
) -> None:
    lab = enforced_lab
    data = os.urandom(1_500_000)
    cfg = write_config(tmp_path, [item("guide", put_upstream(lab, "guide.mp4", data), data)])
    run_sync(lab, cfg, "--once")  # the hub's own fetch, over its uplink

    enf = Enforcer(lab_config(lab), netns=lab.hub_ns, shaping=False)
    try:
        enf.reconcile(DesiredState())
        c1 = lab.clients[0]
        enf.authorize(grant(c1, quota_bytes=200_000))
        # use the plan up on the internet
        c1.curl(f"http://{UPSTREAM}/bytes/1000000", "-o", "/dev/null", timeout=5)
        used = enf.counters()[c1.mac]
        assert used.quota_exhausted
        assert not reaches(c1, f"http://{UPSTREAM}/")

        with Serving(lab, cfg):
            got = tmp_path / "got.bin"
            r = curl(c1, "/files/guide/guide.mp4", "-o", str(got), "-w", "%{http_code}")
            assert r.stdout == "200", r.stderr
            assert hashlib.sha256(got.read_bytes()).digest() == hashlib.sha256(data).digest()
            after = enf.counters()[c1.mac]
            # 1.5 MB received, not a byte of it counted against the plan
            assert (after.up_bytes, after.down_bytes) == (used.up_bytes, used.down_bytes)

            # deauthorised (plan over, on_exhaustion: deauth): the library is still there
            enf.deauthorize(c1.mac)
            r = curl(c1, "/files/guide/guide.mp4", "-r", "0-99", "-o", "/dev/null",
                     "-w", "%{http_code}")  # fmt: skip
            assert r.stdout == "206"
    finally:
        enf.close()
