"""The unprivileged portal's identity in the lab and the demo, as the hub role creates it."""

from __future__ import annotations

import grp
import subprocess

NOBODY = 65534
PORTAL_GROUP = "relais-portal"  # the agent gives its socket to this group


def portal_gid() -> int:
    """The portal's group id (the group is created if this machine lacks it)."""
    try:
        return grp.getgrnam(PORTAL_GROUP).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", PORTAL_GROUP], check=True)
        return grp.getgrnam(PORTAL_GROUP).gr_gid


def portal_setpriv() -> list[str]:
    """Prefix that runs a command as the unprivileged portal."""
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={portal_gid()}", "--clear-groups"]
