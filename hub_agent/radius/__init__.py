"""Accounts through RADIUS: login method ``account`` against an operator's or institution's AAA.

Enabled by the config's ``radius`` section (``hub_agent.config.RadiusSettings``). The API
the agent uses (all of it here; nothing else in the package is needed from outside):

Authentication (on the event loop; never blocks it)::

    client = RadiusClient(config)                      # again after a new config
    result = await client.authenticate(username, password, mac, ip)
    # -> Accepted(params: SessionParams, session_id, username, classes, attrs, server)
    #    or Rejected(message)           (wrong password, Access-Challenge, ...)
    # raises RadiusUnavailable when no server answered (primary, then secondary)

``SessionParams`` (down_kbit, up_kbit, quota_bytes, time_limit_s, idle_timeout_s,
interim_interval_s, plan_id) is what the session service grants: the kernel quota and
shaping as for a voucher. ``session_params`` is the pure mapping from an Access-Accept.

Accounting (RFC 2866; synchronous SQLite, call it where the agent's database work runs)::

    journal = Journal(db, Nas.from_config(config))     # registers Migrations("radius")
    journal.start(result.start(mac, ip))               # device authorised: Start queued
    journal.observe(session_id, up_bytes, down_bytes)  # every accounting pass: Interim
                                                       # queued when Acct-Interim-Interval is due
    journal.stop(session_id, up_bytes, down_bytes, cause)  # cause: a hub end reason
                                                       # (logout, idle, data_quota, ...)
    sender = AccountingSender(journal, client.account, run=on_worker)
    task = asyncio.create_task(sender.run())           # retries until acknowledged

Counters are cumulative for the session (counted bytes, up = from the device). Records are
in SQLite before anything is sent and survive outages and kill -9 (at least once).

Dynamic Authorization (RFC 5176)::

    listener = CoaListener(config, on_disconnect, on_change)
    await listener.start()                             # UDP radius.coa_port (3799)
    async def on_disconnect(target: Target) -> bool    # end the session; False: not found
    async def on_change(target: Target, change: Change) -> bool  # new rate/quota/limits

``Target`` has session_id, username, mac, ip (whatever the request named; all given must
match). ``Change`` fields are None when unchanged. Answers ACK, or NAK with Error-Cause.
"""

from hub_agent.radius.accounting import TERMINATE_CAUSE, Journal, SessionStart
from hub_agent.radius.client import Accepted, RadiusClient, RadiusUnavailable, Rejected
from hub_agent.radius.coa import CoaListener, OnChange, OnDisconnect, Target
from hub_agent.radius.packets import Nas
from hub_agent.radius.params import Change, SessionParams, session_params
from hub_agent.radius.sender import AccountingSender

__all__ = [
    "TERMINATE_CAUSE",
    "Accepted",
    "AccountingSender",
    "Change",
    "CoaListener",
    "Journal",
    "Nas",
    "OnChange",
    "OnDisconnect",
    "RadiusClient",
    "RadiusUnavailable",
    "Rejected",
    "SessionParams",
    "SessionStart",
    "Target",
    "session_params",
]
