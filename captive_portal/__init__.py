"""Relais captive portal: splash, login, status, OS probes, RFC 8908 API, caretaker dashboard."""
