"""GET /content/: the local library, free of quota, in the portal's look (no JavaScript).

The page lists what the hub agent published in ``<data_dir>/content/library.json`` (only
verified, whole items ever appear there), grouped by kind then language. The files
themselves are served by the hub's nginx on ``content.serve_port`` (sendfile, Range,
ETag): the portal only renders the list and links there, so a 200 MB video never passes
through Python. ZIM files link to kiwix-serve under ``/wiki/`` on the same port.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from jinja2 import Template

from captive_portal.deps import LangDep, PortalDep
from captive_portal.i18n import Translator
from captive_portal.render import fmt_bytes, localised
from captive_portal.responses import html

log = logging.getLogger(__name__)
router = APIRouter()

KIND_ORDER = ("video", "pdf", "html", "zim", "app")

# The library's own words, fr/en; other languages fall back to French.
TEXTS: dict[str, dict[str, str]] = {
    "fr": {
        "title": "Bibliothèque locale",
        "intro": "Gratuit : ces contenus sont sur le hub, ils ne comptent pas dans votre forfait.",
        "empty": "La bibliothèque est vide pour le moment. Revenez bientôt.",
        "kind.video": "Vidéos",
        "kind.pdf": "Documents",
        "kind.html": "Pages et cours",
        "kind.zim": "Wikipédia et encyclopédies hors ligne",
        "kind.app": "Applications et mises à jour",
        "download": "Télécharger",
        "browse": "Consulter",
        "pinned": "essentiel",
        "lang.fr": "Français",
        "lang.en": "Anglais",
        "back": "Retour",
    },
    "en": {
        "title": "Local library",
        "intro": "Free: this content is on the hub and does not count against your plan.",
        "empty": "The library is empty for now. Come back soon.",
        "kind.video": "Videos",
        "kind.pdf": "Documents",
        "kind.html": "Pages and courses",
        "kind.zim": "Offline Wikipedia and encyclopaedias",
        "kind.app": "Apps and updates",
        "download": "Download",
        "browse": "Browse",
        "pinned": "essential",
        "lang.fr": "French",
        "lang.en": "English",
        "back": "Back",
    },
}

PAGE = """{% extends "base.html" %}
{% block main %}
<h1>{{ x.title }}</h1>
<p class="n n-ok">{{ x.intro }}</p>
{% if not groups %}<p>{{ x.empty }}</p>{% endif %}
{% for g in groups %}
<h2>{{ g.label }}</h2>
{% if g.wiki %}<p><a class="lib" href="{{ g.wiki }}">{{ x.browse }} →</a></p>{% endif %}
{% for sub in g.languages %}
<div class="box"><b>{{ sub.label }}</b>
<ul class="plans">
{% for i in sub["items"] %}
<li><a href="{{ i.browse or i.href }}">{{ i.title }}</a>
{% if i.pinned %} <small>· {{ x.pinned }}</small>{% endif %}
<span class="facts">{{ i.size }}
{% if i.browse %} · <a href="{{ i.href }}">{{ x.download }}</a>{% endif %}</span></li>
{% endfor %}
</ul></div>
{% endfor %}
{% endfor %}
<p><a href="/{{ lang_q }}">{{ x.back }}</a></p>
{% endblock %}
"""


@dataclass
class _Cache:
    path: Path | None = None
    mtime_ns: int = -1
    doc: dict[str, Any] | None = None


_cache = _Cache()
_templates: dict[int, Template] = {}


def read_library(path: Path) -> dict[str, Any]:
    """library.json, re-read only when the agent replaced it (atomic rename: never half)."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return {"items": [], "wiki": None}
    if _cache.path != path or _cache.mtime_ns != mtime or _cache.doc is None:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.warning("content library index unreadable: %s", e)
            return {"items": [], "wiki": None}
        _cache.path, _cache.mtime_ns, _cache.doc = path, mtime, doc
    return _cache.doc


def _texts(lang: str) -> dict[str, str]:
    return {**TEXTS["fr"], **TEXTS.get(lang, {})}


def group_library(
    doc: dict[str, Any], t: Translator, default_lang: str, files_base: str
) -> list[dict[str, Any]]:
    """Pure: the index as sections by kind, then by language (the reader's own first)."""
    x = _texts(t.lang)
    groups = []
    for kind in KIND_ORDER:
        items = [i for i in doc.get("items", []) if i.get("kind") == kind]
        if not items:
            continue
        langs = sorted({i.get("language", "") for i in items}, key=lambda c: (c != t.lang, c))
        subs = []
        for code in langs:
            rows = [
                {
                    "title": localised(i["title"], t.lang, default_lang),
                    "size": fmt_bytes(int(i["size"]), t),
                    "href": files_base + i["href"],
                    "browse": files_base + i["browse"] if i.get("browse") else None,
                    "pinned": bool(i.get("pinned")),
                }
                for i in items
                if i.get("language", "") == code
            ]
            rows.sort(key=lambda r: (not r["pinned"], r["title"].lower()))
            subs.append({"label": x.get(f"lang.{code}", code), "items": rows})
        wiki = files_base + doc["wiki"] if kind == "zim" and doc.get("wiki") else None
        groups.append({"label": x[f"kind.{kind}"], "languages": subs, "wiki": wiki})
    return groups


def files_base_url(request: Request, port: int) -> str:
    """The hub's static server, on the host name the phone used to reach the portal."""
    host = request.url.hostname or "10.42.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


@router.get(
    "/content/",
    response_class=HTMLResponse,
    summary="The local content library (free of quota)",
)
async def content_library(request: Request, portal: PortalDep, t: LangDep) -> HTMLResponse:
    settings = portal.settings
    config = settings.config
    doc = read_library(config.data_dir / "content" / "library.json")
    base = files_base_url(request, config.content.serve_port)
    groups = group_library(doc, t, config.portal.default_language, base)
    x = _texts(t.lang)
    cat = settings.languages.catalogue
    ctx = {
        "lang": t.lang,
        "t": t,
        "x": x,
        "title": x["title"],
        "hub_name": config.hub.name,
        "kind_label": t(f"kind.{config.hub.kind}"),
        "lang_links": [
            {
                "code": code,
                "label": cat[code].get("lang.name", code),
                "href": f"/content/?{urlencode({'lang': code})}",
                "current": code == t.lang,
            }
            for code in settings.languages.available
        ],
        "lang_q": f"?{urlencode({'lang': t.lang})}",
        "groups": groups,
    }
    template = _templates.get(id(portal.renderer.env))
    if template is None:  # compiled once per renderer, extending the portal's base.html
        template = _templates[id(portal.renderer.env)] = portal.renderer.env.from_string(PAGE)
    body = template.render(**ctx)
    return html(body)


@router.get("/content", include_in_schema=False)
async def content_slash(t: LangDep) -> HTMLResponse:
    return html("", 308, {"Location": f"/content/?{urlencode({'lang': t.lang})}"})
