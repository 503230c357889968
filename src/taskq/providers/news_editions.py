"""Google News editions: the hl, gl and ceid a GOOGLE_NEWS task's country and language are sent as.

Google News serves a fixed set of editions, each named by a ``ceid`` of ``COUNTRY:language`` where the
language is Google's own (``BR:pt-419``, ``PT:pt-150``, ``TW:zh-Hant``, ``CN:zh-Hans``). A ceid Google
does not serve, or hl/gl/ceid that disagree, get odd or empty feeds, so the three are always one edition:

- a country with editions gets its edition in the task's language (``hl``), else its main edition;
- a country without one gets the edition of the task's language: the one of its variant (pt-PT, zh-TW),
  else the one of its home country (en: US, es: ES, pt: BR, ...), else ``US:en``; gl is then that
  edition's country;
- ``hl`` is the task's when it is in the edition's language (and variant: pt-PT is not sent to the
  BR:pt-419 edition), else the edition's own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Edition:
    country: str
    language: str  # Google's language of the edition: en, pt-419, zh-Hant, ...
    hl: str  # the interface language Google News uses for it: en-US, pt-BR, zh-TW, de, ...

    @property
    def ceid(self) -> str:
        return f"{self.country}:{self.language}"

    @property
    def base(self) -> str:
        """The language without Google's region or script variant: pt-419 -> pt."""
        return self.language.split("-")[0]


#: Every edition Google News serves (its ceid values); a country's main edition comes first.
CEIDS = """
    AE:ar AR:es-419 AT:de AU:en BD:bn BE:nl BE:fr BG:bg BR:pt-419 BW:en CA:en CA:fr CH:de CH:fr CL:es-419
    CN:zh-Hans CO:es-419 CU:es-419 CZ:cs DE:de EG:ar ES:es ET:en FR:fr GB:en GH:en GR:el HK:zh-Hant HU:hu
    ID:id ID:en IE:en IL:he IL:en IN:en IN:hi IN:bn IN:ml IN:mr IN:ta IN:te IT:it JP:ja KE:en KR:ko LB:ar
    LT:lt LV:lv LV:en MA:fr MX:es-419 MY:en NA:en NG:en NL:nl NO:no NZ:en PE:es-419 PH:en PK:en PL:pl
    PT:pt-150 RO:ro RS:sr RU:ru SA:ar SE:sv SG:en SI:sl SK:sk SN:fr TH:th TR:tr TW:zh-Hant TZ:en UA:uk
    UA:ru UG:en US:en US:es-419 VE:es-419 VN:vi ZA:en ZW:en
""".split()

#: Google's hl of the editions whose ceid language is not an hl value; besides these, English (and
#: Canadian French) editions use the country's variant (en-GB, fr-CA) and es-419 stays as it is.
_HL = {"pt-419": "pt-BR", "pt-150": "pt-PT", "zh-Hans": "zh-CN"}

#: Where a language is at home, for countries that have no edition of their own.
_HOME = {"en": "US", "es": "ES", "pt": "BR", "fr": "FR", "de": "DE", "ar": "EG", "zh": "CN", "ru": "RU"}


def _hl(country: str, language: str) -> str:
    if language in _HL:
        return _HL[language]
    if language == "zh-Hant":
        return f"zh-{country}"
    if language == "en" or (language == "fr" and country == "CA"):
        return f"{language}-{country}"
    return language


def _editions() -> dict[str, list[Edition]]:
    by_country: dict[str, list[Edition]] = {}
    for ceid in CEIDS:
        country, language = ceid.split(":")
        by_country.setdefault(country, []).append(Edition(country, language, _hl(country, language)))
    return by_country


EDITIONS: dict[str, list[Edition]] = _editions()
_US_ENGLISH = EDITIONS["US"][0]


def _language(hl: str) -> str:
    """The base language of an hl value: pt-BR -> pt, zh_TW -> zh."""
    return hl.replace("_", "-").split("-")[0].lower()


def _same_variant(edition: Edition, hl: str) -> bool:
    """Whether hl names this edition's variant of its language (zh-TW is Traditional, zh-CN is not)."""
    return hl.replace("_", "-").lower() in (edition.hl.lower(), edition.language.lower())


def edition(country: str, hl: str | None) -> Edition:
    """The edition a task's country (ISO code) and hl are served from."""
    language = _language(hl) if hl else None
    own = EDITIONS.get(country.upper())
    if own:
        return next((e for e in own if e.base == language), own[0])
    if hl and language:
        candidates = [e for eds in EDITIONS.values() for e in eds if e.base == language]
        exact = [e for e in candidates if "-" in e.language and _same_variant(e, hl)]  # pt-PT, zh-TW
        home = [e for e in candidates if e.country == _HOME.get(language)]
        for found in (exact, home, candidates):
            if found:
                return found[0]
    return _US_ENGLISH


def feed_params(country: str, hl: str | None) -> dict[str, str]:
    """hl, gl and ceid of one edition; the task's hl is kept when it is in the edition's language."""
    chosen = edition(country, hl)
    if hl and _language(hl) == chosen.base and ("-" not in chosen.language or _same_variant(chosen, hl)):
        return {"hl": hl, "gl": chosen.country, "ceid": chosen.ceid}
    return {"hl": chosen.hl, "gl": chosen.country, "ceid": chosen.ceid}
