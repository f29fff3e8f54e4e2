"""What the demo prints once it is up: the phone's commands (log in with a voucher, buy a
plan by mobile money) and where to find each part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.demo_config import (
    BIN,
    DEMO_PHONE,
    HUB_ID,
    HUB_NAME,
    MQTT_PORT,
    PORTAL,
    SIM_URL,
    STATE,
    shown,
)


def login_script(code: str) -> str:
    """A shell line that logs the phone in as its browser would: splash form, then POST."""
    token = rf'curl -s {PORTAL}/ | grep -o "name=.csrf. value=.[^\"]*" | head -1 | cut -d\" -f4'
    post = f"curl -s -d method=voucher -d code={code} --data-urlencode csrf=$t {PORTAL}/login"
    return f"""sh -c 't=$({token}); {post} | grep -o "<h1>[^<]*"'"""


def pay_script(phone: str, plan: str = "heure") -> str:
    """A shell line that buys ``plan`` from the phone as its browser would (the splash's
    mobile-money form and its CSRF token); prints the purchase's page path."""
    box = r'sed -n "/action=.\/pay./,\$p"'
    token = (
        rf'curl -s {PORTAL}/ | {box} | grep -o "name=.csrf. value=.[^\"]*" | head -1 | cut -d\" -f4'
    )
    post = (f"curl -s -d plan={plan} -d phone={phone} --data-urlencode csrf=$t {PORTAL}/pay"
            ' | grep -o "/pay/[A-Za-z0-9_-]*" | head -1')  # fmt: skip
    return f"""bash -c 't=$({token}); {post}'"""


def confirm_script(phone: str) -> str:
    """The phone types its PIN: the simulator's JSON API (its page does the same)."""
    return (f"curl -sf -H 'Content-Type: application/json' -d '{{\"phone\": \"{phone}\"}}'"
            f" {SIM_URL}/_sim/confirm >/dev/null && echo confirmed")  # fmt: skip


def render_text(info: dict[str, Any]) -> str:
    ns = info["client_ns"]
    v = info["vouchers"]
    hubctl = f"{shown(BIN / 'hubctl')} --state {shown(Path(info['central_state']))}"
    rows = [
        ("Portal (phone)", f"{PORTAL}/"),
        ("Caretaker (phone)", f"{PORTAL}/admin   password: {info['caretaker_password']}"),
        ("Library (phone)", f"{PORTAL}/content/   ({info['content_ready']} items synced)"),
        ("Fleet page", f"{info['fleet_url']}   (this machine; hub {info['hub_status']})"),
        ("Fleet in a terminal", f"{hubctl} fleet"),
        ("Library catalogue", f"{hubctl} content list --hub {HUB_ID}"),
        ("Push a config", f"{hubctl} push {HUB_ID} {shown(Path(info['push_file']))}"),
        ("Demo config pushed", f"{info['push']} (signed, over MQTT)"),
        ("Vouchers, 1-hour", "  ".join(v.get("heure", []))),
        ("Vouchers, day pass", "  ".join(v.get("jour", []))),
        ("Mobile money", f"{SIM_URL}/   (simulator: confirm or refuse as the phone)"),
        ("Payments", f"{hubctl} payments list"),
        ("MQTT broker", f"mqtt://198.51.100.1:{MQTT_PORT} (hubs), {info['controller_mqtt']}"),
        ("Logs", f"{shown(STATE)}/*.log"),
        ("Stop", "make demo-stop"),
    ]
    lines = [
        f"Relais demo is up: hub {HUB_ID} ({HUB_NAME}), controller and broker.",
        "",
        "Act as a phone (commands run inside the phone's network namespace):",
        f"  ip netns exec {ns} curl -i http://198.51.100.1/        # captive: 302 to the portal",
        "  # log in with a voucher (the portal's form, with its CSRF token), then browse:",
        f"  ip netns exec {ns} {login_script(v['heure'][-1])}",
        f"  ip netns exec {ns} curl http://198.51.100.1/",
        f"  ip netns exec {ns} curl -i http://service-public.gouv.tg/   # by name; open "
        "before login (walled garden)",
        f"  ip netns exec {ns} bash                                 # a shell on the phone",
        f"  ip netns exec {ns} chromium --no-sandbox --user-data-dir=/tmp/relais-phone "
        f"{PORTAL}/   # with a desktop",
        "",
        "Buy a plan by mobile money (T-Money via the PayGate simulator; 96… numbers: Flooz):",
        f"  ip netns exec {ns} {pay_script(DEMO_PHONE)}   # prints /pay/<ref>",
        f"  {confirm_script(DEMO_PHONE)}   # the phone types its PIN",
        f'  ip netns exec {ns} curl -s {PORTAL}/pay/<ref> | grep -o "<h1>[^<]*"',
        f"  # or in a browser: the splash's 'Payer par mobile money', then confirm at {SIM_URL}/",
        "",
        *(f"  {k:<22} {val}" for k, val in rows),
    ]
    return "\n".join(lines)
