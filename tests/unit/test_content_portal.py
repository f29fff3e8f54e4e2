"""GET /content/: the library page in the portal (fr/en, by kind and language, sizes)."""

from __future__ import annotations

from html import unescape
from pathlib import Path
from typing import Any

import pytest
import yaml

from captive_portal.app import create_app
from hub_agent.config import ContentItem, validate_config
from hub_agent.content.library import Library
from tests.unit.real_agent import PortalClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hub.yaml"
HUB = "http://10.42.0.1:8080"


def _item(item_id: str, kind: str, lang: str, size: int, pinned: bool = False) -> ContentItem:
    return ContentItem(
        id=item_id,
        title={"fr": f"FR {item_id}", "en": f"EN {item_id}"},
        kind=kind,
        url=f"http://cdn.example.test/x/{item_id}.bin",
        size=size,
        sha256="0" * 64,
        priority="pinned" if pinned else "normal",
        language=lang,
    )


@pytest.fixture
def client(tmp_path: Path) -> Any:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["data_dir"] = str(tmp_path)
    data["portal"]["agent_socket"] = str(tmp_path / "agent.sock")
    config = validate_config(data)
    Library.under(tmp_path).write_index(
        [
            _item("cours-maths", "video", "fr", 150_000_000),
            _item("intro-english", "video", "en", 2_500_000),
            _item("guide-palu", "pdf", "fr", 1_200_000, pinned=True),
            _item("wikipedia-fr", "zim", "fr", 900_000_000),
        ]
    )
    c = PortalClient(create_app(config, secret=b"s" * 32), "10.42.0.101", HUB)
    try:
        yield c
    finally:
        c.close()


def test_library_in_french_grouped_by_kind_and_language(client: PortalClient) -> None:
    r = client.get("/content/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    page = unescape(r.text)
    assert "Bibliothèque locale" in page and "ne comptent pas dans votre forfait" in page
    # kinds in order, French items before English ones inside a kind
    marks = ("Vidéos", "FR cours-maths", "FR intro-english", "Documents", "Wikipédia")
    order = [page.index(m) for m in marks]
    assert order == sorted(order)
    assert page.index("Français") < page.index("Anglais")
    # sizes, with French units
    assert "150 Mo" in page and "1,2 Mo" in page
    # files are served by the hub's static server, on the host the phone used
    assert 'href="http://10.42.0.1:8081/files/guide-palu/guide-palu.bin"' in r.text
    assert 'href="http://10.42.0.1:8081/wiki/"' in r.text
    assert "<script" not in r.text


def test_library_in_english_by_query(client: PortalClient) -> None:
    page = unescape(client.get("/content/?lang=en").text)
    assert "Local library" in page and "does not count against your plan" in page
    assert "EN guide-palu" in page and "Videos" in page
    # the reader's language first: English before French within videos
    assert page.index("EN intro-english") < page.index("EN cours-maths")


def test_empty_library_says_so(tmp_path: Path, client: PortalClient) -> None:
    Library.under(tmp_path).write_index([])
    page = unescape(client.get("/content/").text)
    assert "La bibliothèque est vide" in page
    assert "/files/" not in page


def test_content_without_slash_redirects(client: PortalClient) -> None:
    r = client.get("/content?lang=en", follow_redirects=False)
    assert r.status_code == 308
    assert r.headers["location"] == "/content/?lang=en"


def test_html_bundle_links_to_its_pages_and_offers_the_zip(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["data_dir"] = str(tmp_path)
    config = validate_config(data)
    lib = Library.under(tmp_path)
    course = _item("cours-svt", "html", "fr", 3_000_000)
    (lib.files_dir / "cours-svt").mkdir(parents=True)
    (lib.files_dir / "cours-svt" / "site.entry").write_text("index.html")
    lib.write_index([course])
    c = PortalClient(create_app(config, secret=b"s" * 32), "10.42.0.101", HUB)
    try:
        page = c.get("/content/").text
    finally:
        c.close()
    assert 'href="http://10.42.0.1:8081/files/cours-svt/site/index.html">FR cours-svt' in page
    assert 'href="http://10.42.0.1:8081/files/cours-svt/cours-svt.bin">Télécharger' in page
