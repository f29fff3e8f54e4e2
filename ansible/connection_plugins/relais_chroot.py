"""Run Ansible tasks inside a chroot: build a hub's SD-card image, or test the roles.

ansible-core ships no chroot connection (it lives in community.general, which needs Galaxy),
so this small plugin does the three things a connection needs with the host's ``chroot``:
run a command, put a file, fetch a file. ``ansible_host`` is the root directory.
Files travel through ``chroot ... dd``/``cat`` so paths resolve inside the root, symlinks
included, exactly as they would on the booted box.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

from ansible.errors import (  # type: ignore[import-untyped]
    AnsibleConnectionFailure,
    AnsibleError,
    AnsibleFileNotFound,
)
from ansible.plugins.connection import ConnectionBase  # type: ignore[import-untyped]
from ansible.utils.display import Display  # type: ignore[import-untyped]

DOCUMENTATION = """
    name: relais_chroot
    short_description: run tasks in a local chroot (no Galaxy collection needed)
    description:
        - Runs commands with the host's chroot(8) inside a directory holding a Debian root.
        - Used to build hub images and to test the Relais roles on a debootstrap root.
    author: Relais
    options:
        remote_addr:
            description: the chroot directory
            default: inventory_hostname
            type: string
            vars:
                - name: inventory_hostname
                - name: ansible_host
        chroot_exe:
            description: the chroot program on the controller
            default: chroot
            type: string
            vars:
                - name: ansible_chroot_exe
    extends_documentation_fragment:
        - connection_pipelining
    notes:
        - Run as root on the controller; the root needs /bin/sh and python3.
"""

display = Display()

_BUFSIZE = 65536
# What a root shell on the booted box would have; the controller's own environment (its pip
# mirrors, proxies, virtualenv) must not leak into the image being built.
_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}


class Connection(ConnectionBase):  # type: ignore[misc]
    """A connection whose "remote" is a directory on this machine, entered with chroot."""

    transport = "relais_chroot"
    has_pipelining = True
    _connected: bool

    def _root(self) -> str:
        root = str(self.get_option("remote_addr"))
        if not os.path.isdir(root):
            raise AnsibleConnectionFailure(f"chroot directory {root!r} does not exist")
        if not os.path.isfile(os.path.join(root, "bin", "sh")) and not os.path.islink(
            os.path.join(root, "bin", "sh")
        ):
            raise AnsibleConnectionFailure(f"{root!r} has no /bin/sh: not a Debian root")
        return root

    def _chroot_exe(self) -> str:
        exe = shutil.which(str(self.get_option("chroot_exe")))
        if exe is None:
            raise AnsibleConnectionFailure("chroot(8) not found on the controller")
        return exe

    def _connect(self) -> Connection:
        if os.geteuid() != 0:
            raise AnsibleConnectionFailure("the relais_chroot connection needs root")
        if not self._connected:
            display.vvv(f"ENTER CHROOT {self._root()}")
            self._connected = True
        return self

    def _run(self, argv: list[str], stdin: bytes | None) -> tuple[int, bytes, bytes]:
        cmd = [self._chroot_exe(), self._root(), *argv]
        proc = subprocess.run(
            cmd, input=stdin if stdin is not None else b"", capture_output=True, env=_ENV
        )
        return proc.returncode, proc.stdout, proc.stderr

    def exec_command(
        self, cmd: str, in_data: bytes | None = None, sudoable: bool = False
    ) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"EXEC {cmd}", host=self._root())
        return self._run(["/bin/sh", "-c", cmd], in_data)

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self._root())
        try:
            with open(in_path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}") from None
        dd = f"dd of={shlex.quote(out_path)} bs={_BUFSIZE} status=none"
        rc, _, err = self._run(["/bin/sh", "-c", dd], data)
        if rc != 0:
            reason = err.decode(errors="replace")
            raise AnsibleError(f"failed to put {in_path} to {out_path}: {reason}")

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self._root())
        rc, data, err = self._run(["cat", in_path], None)
        if rc != 0:
            raise AnsibleError(f"failed to fetch {in_path}: {err.decode(errors='replace')}")
        with open(out_path, "wb") as f:
            f.write(data)

    def close(self) -> None:
        self._connected = False
