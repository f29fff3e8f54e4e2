"""A4 sheets of cut-out voucher cards: network, plan, price, code, and a QR code.

The QR code opens the portal with the code filled in (``http://<portal>/?code=<CODE>``),
so a phone that has joined the Wi-Fi needs one scan. QR modules are drawn as vector
squares (sharp at any printer resolution); text uses the PDF base fonts (Latin-1 covers
French). Pure rendering: ``render_sheet`` writes bytes to a path and touches nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import segno
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from hub_agent.config import HubConfig, LanSettings, PortalSettings
from hub_agent.sessions.vouchers import format_code

COLS, ROWS = 2, 5
MARGIN_X, MARGIN_Y = 10 * mm, 12 * mm
QR_SIZE = 34 * mm


@dataclass(frozen=True)
class Card:
    network: str  # hub or network name, as people know the Wi-Fi
    plan: str  # plan name in the sheet's language
    price_label: str
    code: str  # canonical 12 symbols
    portal_url: str  # e.g. http://10.42.0.1:8080/
    detail: str = ""  # e.g. "2 appareils · valable jusqu'au 30/06/2027"

    @property
    def qr_url(self) -> str:
        return f"{self.portal_url.rstrip('/')}/?code={quote(self.code)}"


def default_portal_url(lan: LanSettings | None = None, portal: PortalSettings | None = None) -> str:
    """The portal as a client on the hub's LAN reaches it (the example config's address)."""
    lan = lan or LanSettings()
    port = (portal or PortalSettings()).http_port
    host = str(lan.address.ip)
    return f"http://{host}/" if port == 80 else f"http://{host}:{port}/"


def hub_cards(config: HubConfig, plan_id: str, codes: list[str], lang: str = "fr") -> list[Card]:
    """Cards for codes issued at a hub (``hub-agent vouchers issue`` or the dashboard):
    the hub's own name and portal address (KeyError for an unknown plan)."""
    plan = config.plan(plan_id)
    n = plan.devices_per_voucher
    detail = f"{n} appareil{'s' if n > 1 else ''} · valable sur ce point d'accès"
    name = plan.name.get(lang) or next(iter(plan.name.values()))
    url = default_portal_url(config.network.lan, config.portal)
    return [Card(config.hub.name, name, plan.price_label, c, url, detail) for c in codes]


def _draw_qr(c: Canvas, data: str, x: float, y: float, size: float) -> None:
    qr = segno.make(data, error="m", micro=False)
    matrix = [list(row) for row in qr.matrix]
    border = 2  # quiet zone in modules (the card's white margin adds to it)
    n = len(matrix) + 2 * border
    module = size / n
    c.setFillColorRGB(1, 1, 1)
    c.rect(x, y, size, size, stroke=0, fill=1)
    c.setFillColorRGB(0, 0, 0)
    path = c.beginPath()
    for r, row in enumerate(matrix):
        for col, dark in enumerate(row):
            if dark:
                px = x + (col + border) * module
                py = y + size - (r + border + 1) * module
                path.rect(px, py, module, module)
    c.drawPath(path, stroke=0, fill=1)


def _draw_card(c: Canvas, card: Card, x: float, y: float, w: float, h: float) -> None:
    c.setDash(3, 3)
    c.setStrokeColorRGB(0.6, 0.6, 0.6)
    c.rect(x, y, w, h, stroke=1, fill=0)
    c.setDash()
    pad = 4 * mm
    c.setFillColorRGB(0, 0, 0)
    c.setFont("Helvetica-Bold", 11)
    c.drawString(x + pad, y + h - pad - 9, card.network[:40])
    c.setFont("Helvetica", 10)
    c.drawString(x + pad, y + h - pad - 23, card.plan[:36])
    c.setFont("Helvetica-Bold", 12)
    c.drawString(x + pad, y + h - pad - 38, card.price_label[:24])
    c.setFont("Courier-Bold", 15)
    c.drawString(x + pad, y + pad + 16, format_code(card.code))
    c.setFont("Helvetica", 6.5)
    if card.detail:
        c.drawString(x + pad, y + pad + 6, card.detail[:60])
    c.drawString(x + pad, y + pad - 2, "Wi-Fi puis scannez / saisissez le code")
    _draw_qr(c, card.qr_url, x + w - QR_SIZE - 3 * mm, y + (h - QR_SIZE) / 2, QR_SIZE)


def render_sheet(cards: list[Card], out: Path, title: str = "Relais vouchers") -> int:
    """Write the cards, ``COLS x ROWS`` per A4 page, to ``out``; return the page count."""
    if not cards:
        raise ValueError("cards: nothing to print")
    page_w, page_h = A4
    w = (page_w - 2 * MARGIN_X) / COLS
    h = (page_h - 2 * MARGIN_Y) / ROWS
    out.parent.mkdir(parents=True, exist_ok=True)
    c = Canvas(str(out), pagesize=A4)
    c.setTitle(title)
    per_page = COLS * ROWS
    pages = 0
    for start in range(0, len(cards), per_page):
        for i, card in enumerate(cards[start : start + per_page]):
            col, row = i % COLS, i // COLS
            _draw_card(c, card, MARGIN_X + col * w, page_h - MARGIN_Y - (row + 1) * h, w, h)
        c.showPage()
        pages += 1
    c.save()
    return pages
