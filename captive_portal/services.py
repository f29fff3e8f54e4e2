"""The portal's long-lived parts, built once per app and shared by every request."""

from __future__ import annotations

from dataclasses import dataclass, field

from captive_portal.agent import Agent
from captive_portal.ratelimit import Lockout
from captive_portal.render import Renderer
from captive_portal.security import CsrfSigner
from captive_portal.settings import Settings
from captive_portal.splash_pages import SplashPages
from captive_portal.state import AdminSessions


@dataclass
class Portal:
    settings: Settings
    agent: Agent
    renderer: Renderer
    csrf: CsrfSigner
    admin_lockout: Lockout
    admin_sessions: AdminSessions
    splash: SplashPages = field(default_factory=SplashPages)
