"""TOML filters of the relayguard_milter role: the configuration is written by a TOML library.

`to_toml` renders the role's structured configuration (a mapping mirroring relayguard.toml,
arrays of tables included) with tomli-w, so that any table, array of tables or string is
written correctly, never by a hand-written Jinja macro. `from_toml` reads a site's `dlp.toml`
(rules as code, docs/rules.md) on the controller, and `rules_paths` points its dictionaries
(`keywords_file`) at the deployed rules directory. Both run in the controller's Python:
scripts/appliance.sh installs tomli-w next to ansible-core.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from ansible.errors import AnsibleFilterError  # type: ignore[import-untyped]


def plain(value: Any, where: str = "") -> Any:
    """Plain Python values (Ansible's own str/int/dict subclasses out), None keys left out.

    TOML has no null: a key whose value is None is not written, which is how a role variable
    says "leave the key out" (e.g. spam.quarantine_score: null).
    """
    if isinstance(value, Mapping):
        return {
            str(key): plain(item, f"{where}.{key}" if where else str(key))
            for key, item in value.items()
            if item is not None
        }
    if isinstance(value, (list, tuple)):
        if any(item is None for item in value):
            raise AnsibleFilterError(f"to_toml: {where or 'value'}: a list cannot hold null")
        return [plain(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    raise AnsibleFilterError(
        f"to_toml: {where or 'value'}: {type(value).__name__} is not a TOML value"
    )


def to_toml(document: Mapping[str, Any]) -> str:
    """The TOML text of a mapping of tables (plain keys first, then tables and arrays of tables)."""
    try:
        import tomli_w  # noqa: PLC0415 - here, so a missing package says how to install it
    except ImportError as exc:
        raise AnsibleFilterError(
            "to_toml needs the tomli-w package in ansible-playbook's Python "
            "(scripts/appliance.sh installs it; or: pip install tomli-w)"
        ) from exc
    if not isinstance(document, Mapping):
        raise AnsibleFilterError("to_toml: the configuration must be a mapping of tables")
    return tomli_w.dumps(plain(document))


def from_toml(text: str) -> dict[str, Any]:
    """A TOML document as a mapping; a syntax error names the line and column."""
    try:
        return tomllib.loads(str(text))
    except tomllib.TOMLDecodeError as exc:
        raise AnsibleFilterError(f"from_toml: {exc}") from exc


def rules_paths(dlp: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A site's dlp.toml with each relative `keywords_file` (a dictionary in the site's rules
    directory) made absolute under BASE: the release directory while it is checked, the live
    rules directory once it is switched to (a relative path would otherwise be read next to the
    configuration file)."""
    detectors = []
    for detector in dlp.get("dlp_detectors", []):
        path = detector.get("keywords_file") if isinstance(detector, Mapping) else None
        if isinstance(path, str) and path and not path.startswith("/"):
            detector = {**detector, "keywords_file": f"{base.rstrip('/')}/{path}"}
        detectors.append(detector)
    return {**dlp, "dlp_detectors": detectors} if "dlp_detectors" in dlp else dict(dlp)


class FilterModule:
    """Registers the role's filters with Ansible."""

    def filters(self) -> dict[str, Any]:
        return {"to_toml": to_toml, "from_toml": from_toml, "rules_paths": rules_paths}
