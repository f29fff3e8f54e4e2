"""Mobile money end to end with real processes (issue 19): a phone's browser in the lab,
`captive-portal` and `hub-agent run` in the hub namespace, Mosquitto with the users and ACL
`hubctl enroll` wrote, `hubctl payments run` at the centre and the provider simulator as a
real HTTP server (lab/paylab.py). Real HTTP and MQTT between all of them.

Each phone has its own number, so the simulator's payment for a phone is unambiguous.
T-Money numbers (90…) go through PayGate, Flooz numbers (96…) through FedaPay.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator

import pytest

from hub_agent.mqtt.core import SubscribeFailed
from hub_agent.payments import Grant, sign_grant
from hub_agent.sessions.service import device_pseudonym
from hub_agent.sessions.vouchers import make_central_code, month_index, normalise_code
from hub_agent.signing import SigningKey
from lab.firstpacket import PORTAL
from lab.firstpacket import portal_get as _get
from lab.netns import Client
from lab.paylab import HUB_A, HUB_B, PayLab, reaches_upstream, wait_for
from tests.conftest import require_lab, require_mosquitto

pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def pl() -> Iterator[PayLab]:
    require_lab()
    require_mosquitto()
    with PayLab.running(clients=11) as lab:
        yield lab


def _phone(pl: PayLab, i: int) -> Client:
    return pl.lab.clients[i - 1]


def _sessions(pl: PayLab, mac: str) -> int:
    return len(pl.hub_query("SELECT id FROM sessions WHERE mac = ?", mac))


def _secret(pl: PayLab) -> bytes:
    cfg = pl.host_vars(HUB_A)["relais_hub_config"]
    return str(cfg["trust"]["voucher_secret"]).encode()


def test_pay_confirm_on_the_phone_then_online(pl: PayLab) -> None:
    c = _phone(pl, 1)
    assert not reaches_upstream(c)
    ref = pl.buy(c, "90 00 00 01", "")  # network guessed: T-Money, PayGate
    sp = pl.sim_payment("90000001")
    assert (sp["provider"], sp["amount"], sp["status"]) == ("paygate", 100, "pending")
    assert pl.pay_page(c, ref)[0] == "200"  # still waiting, refreshing itself
    assert not reaches_upstream(c)
    assert pl.play("confirm", ref=sp["ref"])["callbacks"] == [200]
    code, page = pl.wait_result(c, ref)
    assert code == "200" and sp["ref"] in page, page[:1500]
    assert reaches_upstream(c), pl.log("agent.log")
    row = wait_for("delivered", lambda: (r := pl.centre_row(ref)) and
                   r["state"] == "delivered" and r, 10)  # fmt: skip
    assert row["amount"] == 100 and row["hub_id"] == HUB_A


@pytest.mark.parametrize(
    ("phone_no", "number", "action", "extra", "state", "words"),
    [
        (2, "90000002", "refuse", {}, "failed", "refusé"),
        (3, "96000003", "expire", {}, "expired", "délai de confirmation"),
        (4, "90000004", "confirm", {"amount": 50}, "mismatch", "montant payé"),
    ],
    ids=["refused", "expired", "wrong-amount"],
)
def test_no_access_without_a_good_payment(
    pl: PayLab, phone_no: int, number: str, action: str, extra: dict[str, int], state: str,
    words: str,
) -> None:  # fmt: skip
    c = _phone(pl, phone_no)
    ref = pl.buy(c, number, "")
    sp = pl.sim_payment(number)
    pl.play(action, ref=sp["ref"], **extra)
    code, page = pl.wait_result(c, ref, timeout=15)
    assert code == "409", page[:1500]
    assert words in page.lower(), page[:1500]
    assert pl.centre_row(ref)["state"] == state  # type: ignore[index]
    assert not reaches_upstream(c)
    assert _sessions(pl, c.mac) == 0


def test_forged_callbacks_give_no_access(pl: PayLab) -> None:
    # FedaPay: a webhook with a bad signature is rejected outright.
    c5 = _phone(pl, 5)
    ref5 = pl.buy(c5, "96000005", "flooz")
    sp5 = pl.sim_payment("96000005")
    assert sp5["provider"] == "fedapay"
    assert pl.play("callback", ref=sp5["ref"], forged=True)["callbacks"] == [400]
    # PayGate: the callback is unsigned, a hint only: the status says pending.
    c6 = _phone(pl, 6)
    ref6 = pl.buy(c6, "90000006", "tmoney")
    sp6 = pl.sim_payment("90000006")
    assert pl.play("callback", ref=sp6["ref"], forged=True)["callbacks"] == [200]
    # The centre decided while answering the callback: still pending, nothing granted.
    for ref in (ref5, ref6):
        row = pl.centre_row(ref)
        assert row is not None and row["state"] == "pending" and row["grant_json"] is None
    for c, ref in ((c5, ref5), (c6, ref6)):
        assert 'http-equiv="refresh"' in pl.pay_page(c, ref)[1]
        assert not reaches_upstream(c)
        assert _sessions(pl, c.mac) == 0


def test_grant_signed_with_another_key_is_refused(pl: PayLab) -> None:
    """The strongest forger: a well-formed grant for this hub, the right purchase,
    device and a valid code, published on the hub's grant topic by the broker's own
    controller user, but signed with a key the hub does not trust."""
    c = _phone(pl, 6)  # its purchase is still pending (previous test)
    rows = pl.hub_query("SELECT request_id FROM purchases WHERE mac = ?", c.mac)
    assert len(rows) == 1
    request_id = rows[0][0]
    code = make_central_code(_secret(pl), "heure", month_index(time.time()), 242424)
    grant = Grant(hub_id=HUB_A, ref="RLFORGED0000000001", request_id=request_id, plan="heure",
                  device=device_pseudonym(_secret(pl), c.mac), code=code, amount=100,
                  currency="XOF", paid_at=time.time())  # fmt: skip
    before = pl.log("agent.log").count("payment grant refused")
    ctl = pl.mqtt()
    try:
        body = json.dumps(sign_grant(SigningKey.generate(), grant)).encode()
        ctl.publish(f"relais/hubs/{HUB_A}/payments/grant", body)
    finally:
        ctl.close()
    wait_for("the agent refused the grant",
             lambda: pl.log("agent.log").count("payment grant refused") > before, 10)  # fmt: skip
    assert not reaches_upstream(c)
    assert _sessions(pl, c.mac) == 0
    assert pl.hub_query("SELECT * FROM purchase_grants WHERE ref = ?", grant.ref) == []


def test_a_hub_cannot_read_another_hubs_payments(pl: PayLab) -> None:
    b_pw = pl.host_vars(HUB_B)["relais_mqtt_password"]
    got: list[str] = []
    own = threading.Event()

    def on_message(topic: str, _payload: bytes, _retained: bool) -> None:
        got.append(topic)
        if topic.startswith(f"relais/hubs/{HUB_B}/"):
            own.set()

    b = pl.mqtt(HUB_B, b_pw, on_message=on_message)
    try:
        refused = False
        try:
            b.subscribe([f"relais/hubs/{HUB_A}/payments/#"])
        except SubscribeFailed:
            refused = True  # Mosquitto 2 says so in the SUBACK
        b.subscribe([f"relais/hubs/{HUB_B}/payments/status"])  # its own: allowed
        ctl = pl.mqtt()
        try:
            for leaf in ("grant", "status"):
                ctl.publish(f"relais/hubs/{HUB_A}/payments/{leaf}", b'{"probe": 1}')
            ctl.publish(f"relais/hubs/{HUB_B}/payments/status", b'{"probe": 2}')
        finally:
            ctl.close()
        assert own.wait(10), "hub B did not get its own status"
        assert got == [f"relais/hubs/{HUB_B}/payments/status"], (refused, got)
    finally:
        b.close()


def _online_once(
    pl: PayLab, c: Client, ref: str, phone: str, wait_s: float, deliver_s: float
) -> None:
    """After a centre's restart: the phone is online and the purchase happened exactly once
    (one centre row, one provider prompt, one session, one grant on the hub)."""
    code, page = pl.wait_result(c, ref, timeout=wait_s)
    assert code == "200", page[:1500] + pl.log("centre.log")
    assert reaches_upstream(c)
    wait_for("delivered", lambda: pl.centre_row(ref)["state"] == "delivered", deliver_s)  # type: ignore[index]
    assert len([r for r in pl.centre_rows() if r["phone"] == phone]) == 1
    sims = [p for p in pl.sim.payments.values() if p.phone.endswith(phone)]
    assert len(sims) == 1 and sims[0].pushed == 1  # charged once
    assert _sessions(pl, c.mac) == 1
    assert len(pl.hub_query("SELECT * FROM purchase_grants WHERE request_id = ?", ref)) == 1


def test_centre_killed_between_paid_and_grant(pl: PayLab) -> None:
    c = _phone(pl, 7)
    ref = pl.buy(c, "96000007", "flooz")  # FedaPay: its signed webhook is lost too
    sp = pl.sim_payment("96000007")
    pl.kill_centre()
    assert pl.play("confirm", ref=sp["ref"])["callbacks"] == [0]  # nobody answers it
    assert not reaches_upstream(c)
    pl.start_centre()  # polls what was pending: the provider says paid
    # A poll the killed process had claimed holds its lease (30 s) before it is taken again.
    _online_once(pl, c, ref, "96000007", wait_s=60, deliver_s=10)


def test_centre_killed_right_after_recording_paid(pl: PayLab) -> None:
    """kill -9 of the real centre process at its fault point: "paid" is on disk, the grant
    neither recorded nor sent. Restarted, it grants once: one session, one sale."""
    c = _phone(pl, 9)
    pl.kill_centre()
    pl.start_centre(fault="paid_recorded")
    ref = pl.buy(c, "90000009", "tmoney")
    sp = pl.sim_payment("90000009")
    pl.play("confirm", ref=sp["ref"])  # its callback makes the centre check, record, die
    centre = pl.procs["centre"]
    wait_for("the centre killed at its fault point", lambda: centre.poll() is not None, 20)
    assert centre.returncode == -9, pl.log("centre.log")
    row = pl.centre_row(ref)
    assert row is not None and row["state"] == "paid" and row["grant_json"] is None, row
    assert not reaches_upstream(c)
    pl.start_centre()  # the paid payment is due: granted now, once
    _online_once(pl, c, ref, "90000009", wait_s=30, deliver_s=20)


def test_agent_killed_after_the_grant(pl: PayLab) -> None:
    c = _phone(pl, 8)
    ref = pl.buy(c, "90000008", "tmoney")
    sp = pl.sim_payment("90000008")
    pl.play("confirm", ref=sp["ref"])
    assert pl.wait_result(c, ref)[0] == "200"
    assert reaches_upstream(c)
    pl.kill_agent()
    assert reaches_upstream(c)  # the kernel keeps enforcing
    pl.start_agent()
    # The same grant again (the centre re-sends until acknowledged; QoS 1 may repeat it).
    row = pl.centre_row(ref)
    assert row is not None and row["grant_json"]
    before = pl.log("agent.log").count("already applied")
    ctl = pl.mqtt()
    try:
        ctl.publish(f"relais/hubs/{HUB_A}/payments/grant", row["grant_json"].encode())
    finally:
        ctl.close()
    wait_for("the re-sent grant acknowledged, not applied",
             lambda: pl.log("agent.log").count("already applied") > before, 10)  # fmt: skip
    assert reaches_upstream(c)
    assert _sessions(pl, c.mac) == 1
    assert len(pl.hub_query("SELECT * FROM purchase_grants WHERE request_id = ?", ref)) == 1
    assert len([r for r in pl.centre_rows() if r["request_id"] == ref]) == 1
    wait_for("delivered", lambda: pl.centre_row(ref)["state"] == "delivered", 10)  # type: ignore[index]


def test_an_unpaid_purchase_code_is_refused_online(pl: PayLab) -> None:
    """The purchase's code is in the payment's description (the operator's SMS carries it)
    before the payment: a phone that reads it and does not pay is refused, the centre
    saying the code is not issued. Paid, the buyer is online all the same."""
    buyer, other = _phone(pl, 10), _phone(pl, 11)
    ref = pl.buy(buyer, "96000010", "flooz")
    sp = pl.sim_payment("96000010")
    m = re.search(r"code ([A-Z0-9-]+)", sp["description"])
    assert m, sp["description"]
    code = normalise_code(m.group(1))
    assert code is not None
    _, _, page = _get(other, PORTAL + "/")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf, page[:800]
    _get(other, PORTAL + "/login", "--data-urlencode", "method=voucher", "--data-urlencode",
         f"code={m.group(1)}", "--data-urlencode", f"csrf={csrf.group(1)}", timeout=15)  # fmt: skip
    assert pl.hub_query("SELECT source, issued FROM roaming WHERE code = ?", code) == [
        ("centre", 0)
    ], pl.log("agent.log")
    assert not reaches_upstream(other)
    assert _sessions(pl, other.mac) == 0
    pl.play("confirm", ref=sp["ref"])
    code_, page = pl.wait_result(buyer, ref, timeout=30)
    assert code_ == "200", page[:1500]
    assert reaches_upstream(buyer)  # the refusal stored here did not cap the buyer
    assert not reaches_upstream(other)
