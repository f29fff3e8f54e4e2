"""The unprivileged portal's identity in the lab and the demo, as the hub role creates it."""

from __future__ import annotations

import grp
import stat
import subprocess
import sys
from pathlib import Path

NOBODY = 65534
PORTAL_GROUP = "relais-portal"  # the agent gives its socket to this group
CHECKOUT = Path(__file__).resolve().parents[1]


def portal_gid() -> int:
    """The portal's group id (the group is created if this machine lacks it)."""
    try:
        return grp.getgrnam(PORTAL_GROUP).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", PORTAL_GROUP], check=True)
        return grp.getgrnam(PORTAL_GROUP).gr_gid


def let_others_traverse(path: Path) -> None:
    """Give every folder from ``path`` up the traverse bit for others where it lacks it
    (never read): a checkout cloned inside ``mktemp -d`` (0700) is out of nobody's reach,
    and the unprivileged portal runs from the checkout's venv."""
    for folder in (path, *path.parents):
        mode = folder.stat().st_mode
        if not mode & stat.S_IXOTH:
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            print(f"lab: {folder}: traverse bit added for the unprivileged portal", file=sys.stderr)


def portal_setpriv(gid: int | None = None) -> list[str]:
    """Prefix that runs a command from this checkout as the unprivileged portal: user
    nobody, group ``gid`` (default the portal's group)."""
    let_others_traverse(CHECKOUT)
    group = portal_gid() if gid is None else gid
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={group}", "--clear-groups"]
