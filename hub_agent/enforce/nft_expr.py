"""The nft JSON vocabulary (nft 1.0.x) the table's planners share: our table's name, the
meta and conntrack marks, expression builders, and ``RuleSpec`` (a rule and its tag)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

TABLE = "relais"
FAMILY = "inet"

MARK_AUTH = 1
MARK_STAFF = 2

ZR_FLAG = 0x10000  # conntrack mark bit: a zero-rated connection of the slot in the low bits
STAFF_CT = 0x20000  # conntrack mark of a staff device's connection: its downloads' class
STAFF_CLASS = "1:10"  # tc_plan.STAFF

# IP protocol numbers, not names: nft resolves names through /etc/protocols, which a
# minimal Debian (no netbase) lacks ("Could not resolve protocol name"; found by booting
# the deployed box). Listings print names back; rules are compared by comment.
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_ICMPV6 = 1, 6, 58

Json = dict[str, Any]
Expr = dict[str, Any]

ACCEPT: Expr = {"accept": None}
DROP: Expr = {"drop": None}
RETURN: Expr = {"return": None}
TCP_RESET: Expr = {"reject": {"type": "tcp reset"}}


def payload(proto: str, field: str) -> Expr:
    return {"payload": {"protocol": proto, "field": field}}


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def ct(key: str) -> Expr:
    return {"ct": {"key": key}}


def match(left: Expr, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def set_mark(value: int) -> Expr:
    return {"mangle": {"key": meta("mark"), "value": value}}


def set_priority(classid: str) -> Expr:
    return {"mangle": {"key": meta("priority"), "value": classid}}


def jump(chain: str) -> Expr:
    return {"jump": {"target": chain}}


def lookup_ctr_map(kind: str, mapname: str) -> Expr:
    return {kind: {"map": {"key": ct("mark"), "data": f"@{mapname}"}}}


def set_ct_mark_from(mapname: str) -> Expr:
    value = {"map": {"key": payload("ether", "saddr"), "data": f"@{mapname}"}}
    return {"mangle": {"key": ct("mark"), "value": value}}


def tc_classid(slot: int) -> str:
    """The HTB class (major 1) a device's slot names, as nft writes a classid."""
    return f"1:{slot:x}"


@dataclass(frozen=True)
class RuleSpec:
    chain: str
    comment: str
    expr: tuple[Expr, ...]

    @property
    def tagged(self) -> str:
        """The comment the kernel holds: the name and a digest of the rule's body. Tables
        are compared by comment (listings print expressions back in another shape), so a
        rule whose body a config changes (the portal's port, the LAN subnet) differs too."""
        body = json.dumps(self.expr, sort_keys=True, default=str).encode()
        return f"{self.comment}#{hashlib.sha256(body).hexdigest()[:8]}"


def specs(rules: list[tuple[str, str, list[Expr]]]) -> list[RuleSpec]:
    """(chain, name, expressions) rows as ``RuleSpec``s, in order."""
    return [RuleSpec(chain, comment, tuple(expr)) for chain, comment, expr in rules]


def rule_name(comment: str) -> str:
    """A kernel rule's comment back to the rule's name (``RuleSpec.comment``)."""
    return comment.partition("#")[0]
