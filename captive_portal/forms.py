"""What every form the portal posts carries: its CSRF token and the page's language.

A POST answers in the language of the page the form was on (the hidden ``lang`` field,
then Accept-Language), and its token is checked against the purpose and binding the page
issued it for (see ``CsrfSigner``; the device's address unless said otherwise). Routes
take ``PostedForm`` (with the portal and the device's address) and declare only their
own fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Form, Request
from fastapi.responses import HTMLResponse
from fastapi.types import DecoratedCallable as Route

from captive_portal.deps import ClientIp, PortalDep, translator_for
from captive_portal.i18n import Translator
from captive_portal.services import Portal

CsrfField = Annotated[str, Form(max_length=200)]
LangField = Annotated[str, Form(max_length=16)]


@dataclass(frozen=True, slots=True)
class Posted:
    portal: Portal
    ip: str  # the device that posted it
    t: Translator
    token: str

    def signed(self, purpose: str, binding: str | None = None) -> bool:
        """The form's token was issued for this purpose and binding (by default this
        device's address), and lately."""
        return self.portal.csrf.check(self.token, purpose, self.ip if binding is None else binding)


def get_posted(
    request: Request, portal: PortalDep, ip: ClientIp, csrf: CsrfField = "", lang: LangField = ""
) -> Posted:
    return Posted(portal, ip, translator_for(portal, request, lang or None), csrf)


PostedForm = Annotated[Posted, Depends(get_posted)]


def page_route(
    method: Callable[..., Callable[[Route], Route]],
    path: str,
    summary: str,
    answers: Mapping[int, str],
    html: bool = True,
) -> Callable[[Route], Route]:
    """A route that answers a page (``html``) or a file, or a redirect (``method``:
    ``router.get`` or ``router.post``); ``answers``: its other statuses and what each
    means, for the docs."""
    kind: dict[str, Any] = {"response_class": HTMLResponse} if html else {}
    return method(
        path,
        **kind,
        response_model=None,
        summary=summary,
        responses={code: {"description": text} for code, text in answers.items()},
    )
