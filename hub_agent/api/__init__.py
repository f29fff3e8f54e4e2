"""The agent's local UNIX-socket API used by the unprivileged portal."""
