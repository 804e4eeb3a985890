"""Shared by the deployment tests: what the service reads from its environment."""

from __future__ import annotations

from pydantic import AliasChoices

from service.settings import Settings


def setting_env_names() -> set[str]:
    """Every environment variable Settings reads: NSP_<FIELD>, or the field's aliases."""
    names = set()
    for field, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {c for c in alias.choices if isinstance(c, str) and c.isupper()}
        else:
            names.add(f"NSP_{field.upper()}")
    return names


def unknown_setting_names(names: object) -> set[str]:
    """The NSP_* (and REDIS_URL) names among ``names`` that Settings would silently ignore."""
    return {n for n in names if isinstance(n, str) and (n.startswith("NSP_") or n == "REDIS_URL")} - (
        setting_env_names()
    )
