"""Reference data: the countries each model covers and the US states (GET /v1/countries, /v1/states)."""

from __future__ import annotations

import re

from flask import Blueprint, request
from flask.typing import ResponseReturnValue

from taskq.api import authenticate
from taskq.errors import ValidationFailed
from taskq.schemas.geo import COUNTRIES, COUNTRIES_BY_MODEL, US_STATE_NAMES

bp = Blueprint("reference", __name__, url_prefix="/v1")

_ALL_COUNTRIES = sorted(COUNTRIES)
_BY_MODEL = {model: sorted(codes) for model, codes in COUNTRIES_BY_MODEL.items()}
_US_STATES = [{"code": code, "name": name} for code, name in sorted(US_STATE_NAMES.items())]
#: Task type names are accepted as models too (google_news, GOOGLE_NEWS).
_ALIASES = {"google_news": "googlenews"}


@bp.get("/countries")
def countries() -> ResponseReturnValue:
    """Supported ISO 3166-1 alpha-2 codes: of one model (?model=chatgpt), or all without one."""
    authenticate()
    model = request.args.get("model")
    if model is None or model == "":
        return _ALL_COUNTRIES
    key = model.lower()
    codes = _BY_MODEL.get(_ALIASES.get(key, key))
    if codes is None:
        names = ", ".join(sorted(_BY_MODEL))
        raise ValidationFailed("Invalid model", [{"field": "model", "message": f"must be one of {names}"}])
    return codes


@bp.get("/states")
def states() -> ResponseReturnValue:
    """US states for state-level targeting as [{code, name}]; other countries have none (empty)."""
    authenticate()
    country = request.args.get("country", "US")  # the reference client's states() sends no country
    if not re.fullmatch(r"[A-Z]{2}", country):
        message = "must be an uppercase ISO 3166-1 alpha-2 country code, e.g. US"
        raise ValidationFailed("Invalid country", [{"field": "country", "message": message}])
    return _US_STATES if country == "US" else []
