"""Pure planner: the captive firewall as one nftables JSON transaction for table `inet relais`.

Nothing here touches the kernel. ``render_ruleset`` turns (config, desired state) into the
document ``nft -j -f -`` applies atomically (flush + recreate of our table only);
``device_add``/``device_remove`` (nft_devices.py) give the few commands that add or remove
ONE device, so a login never reloads the table (and never resets other devices' counters).

How a packet is judged (LAN side ``config.network.lan.interface``):

* ``mark_pre`` (prerouting, mangle): blocked MACs dropped; staff MACs get meta mark 2,
  authorised devices mark 1 (``ether saddr . ip saddr @auth4``, ``@auth4m`` when the IP is
  not known yet, ``@auth6`` by MAC for IPv6), everyone else mark 0.
* ``nat_pre``: mark 0 devices: HTTP to anywhere but the hub -> portal port, DNS -> the hub.
* ``input``: from the LAN only DHCP, DNS, ICMP/NDP and the portal ports reach the hub.
* ``forward``: LAN->LAN dropped (isolation); staff accepted uncounted; authorised devices
  counted against their quota, zero-rated destinations uncounted; unauthorised devices
  reach only the walled garden.
* ``nat_post``: IPv4 from the LAN masqueraded out of the WAN interface (IPv6 is routed).

Where each part lives: nft_expr.py (the JSON vocabulary, marks, ``RuleSpec``),
nft_sets.py (sets and maps: walled garden, zero-rated, staff), nft_captive.py
(``mark_pre``, ``nat_pre``, ``input``), nft_forward.py (``forward``, accounting, quota),
nft_slots.py (shaping slots), nft_devices.py (one device's commands). This module
assembles the table and is the face the enforcer and the applier import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hub_agent.config import HubConfig
from hub_agent.enforce.model import DesiredState, Grant
from hub_agent.enforce.nft_captive import captive_rules, portal_ports
from hub_agent.enforce.nft_devices import (
    LiveDevice,
    auth_elements,
    device_add,
    device_elements,
    device_objects,
    device_remove,
    device_update,
    set_replace,
)
from hub_agent.enforce.nft_expr import FAMILY, STAFF_CT, TABLE, Json, RuleSpec, rule_name
from hub_agent.enforce.nft_forward import forward_rules
from hub_agent.enforce.nft_sets import DYNAMIC_SETS, sets, staff_macs
from hub_agent.enforce.nft_slots import SLOT_MAX, SLOT_MIN, assign_slots, free_slot

# What callers use through this module (the enforcer, fieldtools, tests).
__all__ = [
    "FAMILY",
    "SLOT_MAX",
    "SLOT_MIN",
    "STAFF_CT",
    "TABLE",
    "LiveDevice",
    "assign_slots",
    "auth_elements",
    "chains",
    "counted_grants",
    "device_add",
    "device_remove",
    "device_update",
    "free_slot",
    "portal_ports",
    "render_ruleset",
    "rule_name",
    "rules",
    "set_replace",
    "staff_macs",
]


def chains() -> list[Json]:
    def base(name: str, typ: str, hook: str, prio: int) -> Json:
        return {
            "chain": {
                "family": FAMILY,
                "table": TABLE,
                "name": name,
                "type": typ,
                "hook": hook,
                "prio": prio,
                "policy": "accept",
            }
        }

    def regular(name: str) -> Json:
        return {"chain": {"family": FAMILY, "table": TABLE, "name": name}}

    return [
        base("mark_pre", "filter", "prerouting", -150),
        base("nat_pre", "nat", "prerouting", -100),
        base("input", "filter", "input", 0),
        base("forward", "filter", "forward", 0),
        base("nat_post", "nat", "postrouting", 100),
        regular("lan_in"),
        regular("from_lan"),
        regular("authed"),
        regular("to_lan"),
    ]


def rules(config: HubConfig) -> list[RuleSpec]:
    """Every rule of the table, chain by chain in evaluation order."""
    return captive_rules(config) + forward_rules(config)


def _rule_cmd(spec: RuleSpec) -> Json:
    return {
        "add": {
            "rule": {
                "family": FAMILY,
                "table": TABLE,
                "chain": spec.chain,
                "comment": spec.tagged,
                "expr": list(spec.expr),
            }
        }
    }


def counted_grants(state: DesiredState) -> list[Grant]:
    """Grants that get per-device kernel state (staff devices bypass the portal uncounted)."""
    return [g for g in state.grants if not g.staff]


def render_ruleset(
    config: HubConfig,
    state: DesiredState,
    slots: Mapping[str, int] | None = None,
    dynamic: Mapping[str, list[Any]] | None = None,
) -> Json:
    """The full transaction: flush + recreate table ``inet relais`` with every device.

    ``slots`` keeps live slot assignments (see ``assign_slots``); ``dynamic`` carries the
    resolver-filled sets' current elements over the reload.
    """
    grants = counted_grants(state)
    slot_of = assign_slots((g.mac for g in grants), slots)
    table = {"table": {"family": FAMILY, "name": TABLE}}
    cmds: list[Json] = [{"add": table}, {"delete": table}, {"add": table}]
    cmds += [{"add": o} for g in grants for o in device_objects(g)]
    declared = sets(config, state)
    for obj in declared:
        body = obj.get("set")
        if body and dynamic and dynamic.get(body["name"]) and body["name"] in DYNAMIC_SETS:
            body["elem"] = list(dynamic[body["name"]])
    cmds += [{"add": o} for o in declared]
    cmds += [{"add": c} for c in chains()]
    cmds += [_rule_cmd(r) for r in rules(config)]
    for g in grants:
        cmds += [{"add": e} for e in device_elements(g, slot_of[g.mac])]
    return {"nftables": cmds}
