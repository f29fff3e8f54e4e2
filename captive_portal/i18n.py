"""Translations are files: ``i18n/<lang>.json``. Adding a language is adding a file.

French is the reference: every key must exist in fr.json; another language may miss keys,
which then fall back to the default language and then to French.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

I18N_DIR = Path(__file__).resolve().parent / "i18n"
REFERENCE = "fr"
_LANG_RE = re.compile(r"^[a-z]{2,3}$")


class TranslationError(ValueError):
    pass


def load_catalogue(directory: Path = I18N_DIR) -> dict[str, dict[str, str]]:
    """Every ``<lang>.json`` in ``directory``: flat {key: text}."""
    out: dict[str, dict[str, str]] = {}
    for f in sorted(directory.glob("*.json")):
        lang = f.stem
        if not _LANG_RE.match(lang):
            raise TranslationError(f"{f.name}: file name must be an ISO 639 code")
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise TranslationError(f"{f.name}: {e}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise TranslationError(f"{f.name}: expected a flat object of strings")
        out[lang] = data
    if REFERENCE not in out:
        raise TranslationError(f"{directory}: the reference {REFERENCE}.json is missing")
    return out


@dataclass(frozen=True)
class Translator:
    lang: str
    texts: Mapping[str, str]
    fallbacks: tuple[Mapping[str, str], ...]

    def __call__(self, key: str, **params: object) -> str:
        text = self.texts.get(key)
        for fb in self.fallbacks:
            if text is not None:
                break
            text = fb.get(key)
        if text is None:
            return key
        return text.format(**params) if params else text


@dataclass(frozen=True)
class Languages:
    """The languages this portal offers: configured ones that have a translation file."""

    available: tuple[str, ...]
    default: str
    catalogue: Mapping[str, Mapping[str, str]]

    @classmethod
    def build(
        cls, configured: Iterable[str], default: str, catalogue: Mapping[str, Mapping[str, str]]
    ) -> Languages:
        langs = []
        for lang in configured:
            if lang in catalogue:
                langs.append(lang)
            else:  # a config may name a language before its file is shipped: skip, say so
                log.warning("portal language %r has no translation file; not offered", lang)
        if default not in langs:
            default = langs[0] if langs else REFERENCE
        if not langs:
            langs = [REFERENCE]
        return cls(tuple(langs), default, catalogue)

    def choose(self, query: str | None, accept_language: str | None) -> str:
        return choose_language(query, accept_language, self.available, self.default)

    def translator(self, lang: str) -> Translator:
        fallbacks = tuple(
            self.catalogue[x] for x in dict.fromkeys((self.default, REFERENCE)) if x != lang
        )
        return Translator(lang, self.catalogue[lang], fallbacks)


def parse_accept_language(header: str) -> list[str]:
    """Primary language subtags by descending q (RFC 9110 §12.5.4); q=0 means 'not this'."""
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate(header.split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        for p in params.split(";"):
            name, _, value = p.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if not tag or q <= 0:
            continue
        ranked.append((-q, i, tag.split("-")[0]))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(
    query: str | None, accept_language: str | None, available: Iterable[str], default: str
) -> str:
    """``?lang=`` wins, then the browser's preference, then the hub's default."""
    avail = tuple(available)
    if query and query.lower() in avail:
        return query.lower()
    for tag in parse_accept_language(accept_language or ""):
        if tag in avail:
            return tag
    return default
