"""schemathesis against the portal's own OpenAPI: generated input never yields a 5xx.

The app runs in-process with the real agent (tests/unit/real_agent.py) behind the real
socket; schemathesis' ASGI client sends Host "testserver" from "testclient", which the hub
here knows as a device."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.unit.real_agent import ADMIN_PASSWORD, csrf_of, running_hub

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES_PER_OPERATION = 6  # ~20 operations: about a hundred requests in all


def test_generated_requests_never_get_a_server_error(tmp_path: Path) -> None:
    with running_hub(tmp_path, extra_hosts=("testserver",), login_attempts=100) as hub:
        hub.agent.neighbours["testclient"] = "02:00:00:00:0a:01"
        hub.agent.issue("heure")
        # A caretaker session, so the admin handlers get past the login to their own checks.
        desk = hub.client("testclient", base_url="http://testserver")
        token = csrf_of(desk.get("/admin").text)
        desk.post("/admin/login", data={"password": ADMIN_PASSWORD, "csrf": token})
        sid = desk.cookies["relais_admin"]
        cookies = {"relais_admin": sid}
        csrf = hub.app.state.portal.csrf
        # Valid form tokens half of the time, so generated input reaches the handlers' logic.
        tokens = {
            "/login": csrf.issue("login", "testclient"),
            "/logout": csrf.issue("logout", "testclient"),
            "/admin/login": csrf.issue("admin-login", "testclient"),
            "/admin/disconnect": csrf.issue("admin", sid),
            "/admin/block": csrf.issue("admin", sid),
            "/admin/vouchers": csrf.issue("admin", sid),
        }

        schema = schemathesis.openapi.from_asgi("/openapi.json", hub.app)
        operations = [r.ok() for r in schema.get_all_operations()]
        assert len(operations) >= 15
        seen: dict[str, set[int]] = {}
        calls = [0]

        for op in operations:

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy())
            def check(case) -> None:
                calls[0] += 1
                if isinstance(case.body, dict) and case.path in tokens and calls[0] % 2:
                    case.body["csrf"] = tokens[case.path]
                response = case.call(cookies=cookies)
                key = f"{case.method} {case.path}"
                seen.setdefault(key, set()).add(response.status_code)
                assert response.status_code < 500, (key, response.status_code, response.text)

            check()
        assert {"GET /", "POST /login", "GET /api/captive", "POST /admin/block"} <= set(seen)
        assert seen["POST /login"] - {403}, "no generated login got past the CSRF check"
