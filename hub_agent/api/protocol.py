"""The agent's local API: what the unprivileged portal may ask the privileged agent.

Transport: a UNIX stream socket (mode 0660, group ``relais-portal``), one JSON request
line, one JSON response line, then close. Requests and responses are these models; the
agent identifies a device by the IP the portal saw (it maps IP to MAC itself from the
kernel's neighbour table, so the portal cannot claim another device's MAC).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer

from hub_agent.sessions.states import Shown, ShownReason


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- views -------------------------------------------------------------------------------
# a session's state and end reason as the portal reads them (sessions/states.py: shown)
SessionState = Shown
EndReason = ShownReason


class SessionView(_Msg):
    state: SessionState
    plan_id: str  # "free" for the free tier
    plan_name: dict[str, str]
    down_kbit: int
    up_kbit: int
    bytes_used: int
    bytes_remaining: int | None  # None: unlimited
    seconds_remaining: int | None  # None: unlimited
    started_at: float
    ended_reason: EndReason | None = None
    # a central code's roaming balance (hub_agent/roaming.py): where else it was used;
    # None: not a central code, or never decided; ``balance_offline``: the centre could
    # not be asked, the balance is a bounded offline allowance until it answers
    used_elsewhere: list[UsedElsewhere] | None = None
    balance_offline: bool = False


class UsedElsewhere(_Msg):
    hub: str  # the hub's name
    bytes: int


class DeviceView(_Msg):
    mac: str
    ip: str | None
    hostname: str | None = None
    last_seen: float | None = None
    blocked: bool = False
    staff: bool = False
    session: SessionView | None = None


class HealthView(_Msg):
    cpu_pct: float
    mem_pct: float
    disk_pct: float
    temperature_c: float | None
    uplink_up: bool
    uplink_latency_ms: float | None
    broker_connected: bool
    config_version: int
    cache_used_mb: float
    cache_items: int


class SalesRow(_Msg):
    period: str  # a local day "2026-03-14" or a month "2026-03"
    issued: int  # this hub's own tickets issued (what the caretaker sold)
    issued_value: int  # in the plans' currency (from their price labels)
    used: int  # tickets first used here, central ones included (not mobile-money codes)
    used_value: int
    mobile: int = 0  # mobile-money purchases granted here (paid to the centre, not cash)
    mobile_value: int = 0


class CaretakerView(_Msg):
    """The dashboard's figures beyond devices and health (hub_agent/caretaker.py)."""

    names: dict[str, str]  # MAC -> the name the caretaker gave the device
    hub_macs: list[str]  # the hub's own LAN addresses: never a device to list or block
    sales_days: list[SalesRow]  # newest first
    sales_months: list[SalesRow]
    currency: str
    hours_today: list[int]  # bytes in each local hour of today (24 values)
    uplink_down_since: float | None  # None: the Internet is up
    now: float  # the hub's clock, for "seen 3 min ago"


# --- mobile money (hub_agent/purchases.py) ----------------------------------------------
Network = Literal["tmoney", "flooz"]
# requested: sent to the centre, no answer yet; pending: the phone is asked to confirm;
# paid: paid, access on its way; granted: the signed grant came and was applied;
# no_answer: the centre never answered (the hub stopped asking)
PurchaseState = Literal[
    "requested", "pending", "paid", "granted", "failed", "expired", "mismatch", "no_answer"
]


class PurchaseView(_Msg):
    ref: str  # the hub's request id: the portal's /pay/{ref}
    plan_id: str
    phone: str  # masked, "90 •• •• 12"
    network: Network
    state: PurchaseState
    # failed: refused | insufficient_funds | provider_unavailable | bad_phone | not_sold
    reason: str | None = None
    receipt: str | None = None  # the centre's payment reference (RL…), once known
    code: str | None = None  # the purchase's voucher code, once granted
    login_error: str | None = None  # granted, but the login said no (a LoginError)
    created_at: float


# --- requests ----------------------------------------------------------------------------
class Whoami(_Msg):
    op: Literal["whoami"] = "whoami"
    ip: str


class Login(_Msg):
    op: Literal["login"] = "login"
    ip: str
    method: Literal["voucher", "free", "account"]
    code: str | None = None
    # method "account" (RADIUS): the password is masked in repr and logs, sent on the wire
    username: str | None = Field(default=None, min_length=1, max_length=253)
    password: SecretStr | None = Field(default=None, max_length=128)

    @field_serializer("password", when_used="json")
    def _reveal(self, v: SecretStr | None) -> str | None:
        return None if v is None else v.get_secret_value()


class Logout(_Msg):
    op: Literal["logout"] = "logout"
    ip: str


class ListDevices(_Msg):
    op: Literal["devices"] = "devices"


class Health(_Msg):
    op: Literal["health"] = "health"


class Disconnect(_Msg):
    op: Literal["disconnect"] = "disconnect"
    mac: str


class Block(_Msg):
    op: Literal["block"] = "block"
    mac: str
    blocked: bool


class IssueVouchers(_Msg):
    op: Literal["issue_vouchers"] = "issue_vouchers"
    plan_id: str
    count: int = Field(ge=1, le=200)


class NameDevice(_Msg):
    """The caretaker names a device ("" removes the name)."""

    op: Literal["name_device"] = "name_device"
    mac: str
    name: str = Field(max_length=80)


class CaretakerInfo(_Msg):
    op: Literal["caretaker"] = "caretaker"


class Watch(_Msg):
    """Long poll of the device changes after ``since`` (hub_agent/api/changes.py): the
    portal's device cache stays true without a round trip per request."""

    op: Literal["watch"] = "watch"
    since: int = -1
    wait_s: float = Field(default=20.0, ge=0, le=60)


class Pay(_Msg):
    """Start a mobile-money purchase for the device at ``ip``."""

    op: Literal["pay"] = "pay"
    ip: str
    plan_id: str = Field(max_length=64)
    phone: str = Field(max_length=32)
    network: Network | None = None  # None: guessed from the number's prefix


class PayStatus(_Msg):
    """A purchase of this device (``ref``), or with ``ref`` None whether mobile money is
    offered now (``Response.pay_online``)."""

    op: Literal["pay_status"] = "pay_status"
    ip: str
    ref: str | None = Field(default=None, max_length=64)


class PortalListen(_Msg):
    """The portal's word on a config that moves its listeners (address or ports): it serves
    there now (``error`` None), or why it cannot (it stays where it was). The agent waits
    for it before reporting the config applied (hub_agent/portal_follow.py)."""

    op: Literal["portal_listen"] = "portal_listen"
    version: int
    error: str | None = Field(default=None, max_length=500)


Request = Annotated[
    Whoami
    | Login
    | Logout
    | ListDevices
    | Health
    | Disconnect
    | Block
    | IssueVouchers
    | NameDevice
    | CaretakerInfo
    | Pay
    | PayStatus
    | Watch
    | PortalListen,
    Field(discriminator="op"),
]


class RequestEnvelope(_Msg):
    request: Request


# --- responses ---------------------------------------------------------------------------
LoginError = Literal[
    "unknown_code",  # no such code (or a typo: the check characters do not match)
    "used_up",  # every device slot of the voucher is taken / data used up
    "expired",
    "revoked",
    "free_used_today",  # free allowance for today is used up
    "method_disabled",
    "blocked",  # the caretaker blocked this device
    "unknown_device",  # the agent cannot see this IP on the LAN
    "rate_limited",
    "bad_account",  # RADIUS Access-Reject: wrong username or password (counts as wrong)
    "radius_unavailable",  # no RADIUS server answered (does not count)
]


class Response(_Msg):
    ok: bool
    error: str | None = None  # a LoginError code, or a short machine-readable reason
    message: str | None = None  # for logs and the caretaker, not shown to users verbatim
    device: DeviceView | None = None
    devices: list[DeviceView] | None = None
    health: HealthView | None = None
    vouchers: list[str] | None = None
    uplink_up: bool | None = None
    caretaker: CaretakerView | None = None
    # a refused login: seconds until the device may try again (locked), or the wrong
    # codes it has left when few are (the page warns "encore 2 essais")
    retry_after: int | None = None
    attempts_left: int | None = None
    # an unknown code that failed its check: the symbol to re-read (1-based, dashes not
    # counted), when it can be told without saying whether any code exists
    typo_position: int | None = Field(default=None, ge=1, le=12)
    purchase: PurchaseView | None = None  # Pay, PayStatus
    pay_online: bool | None = None  # PayStatus: mobile money is offered now
    # the change feed's generation this answer reflects (whoami, login, Watch)
    generation: int | None = None
    changed: dict[str, int] | None = None  # Watch: MAC -> its latest change ("*": all)
