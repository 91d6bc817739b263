"""Project rules a test can hold: documented schema, thin adapter, imports without side effects,
one exception tree."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import relayguard
from relayguard.config import SCHEMA
from relayguard.core.errors import RelayguardError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]


def test_every_schema_key_is_documented() -> None:
    documented = set(
        re.findall(r"`([a-z_]+\.[a-z_]+)`", (ROOT / "docs/configuration.md").read_text())
    )
    keys = {f"{table}.{key}" for table, keys in SCHEMA.items() if table for key in keys}
    assert keys - documented == set()


def test_only_the_adapter_imports_pymilter() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+(Milter|milter)\b", re.MULTILINE)
    importers = {
        path.relative_to(ROOT / "milter").as_posix()
        for path in (ROOT / "milter/relayguard").rglob("*.py")
        if pattern.search(path.read_text())
    }
    assert importers == {"relayguard/daemon/adapter.py"}


def all_modules() -> list[str]:
    """Every module of the package but `__main__` ones (importing those runs the command)."""
    found = pkgutil.walk_packages(relayguard.__path__, "relayguard.")
    return sorted(m.name for m in found if not m.name.endswith(".__main__"))


IMPORT_EVERYTHING = """
import importlib, json, os, sys
import dkim
from prometheus_client import values

def state():
    return {
        "dkim RSA": dkim.RSASSA_PKCS1_v1_5_sign,
        "dkim PEM parser": dkim.parse_pem_private_key,
        "prometheus value class": values.ValueClass,
        "PROMETHEUS_MULTIPROC_DIR": os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
    }

before = state()
for name in sys.argv[1:]:
    importlib.import_module(name)
after = state()
print(json.dumps(sorted(k for k in before if before[k] is not after[k])))
"""


def test_importing_any_module_patches_nothing() -> None:
    """The OpenSSL signer and the metrics' multiprocess values are explicit calls at process
    start (engine.runtime.prepare_process, metrics.start_exporter), never import side effects."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERYTHING, *all_modules()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout) == []


def test_every_exception_relayguard_raises_is_a_relayguard_error() -> None:
    """One tree (core/errors.py): a caller can catch relayguard's errors without a list of
    module-local classes. Private ones never leave their module."""
    outside = []
    for name in all_modules():
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or cls_name.startswith("_"):
                continue
            if issubclass(cls, BaseException) and not issubclass(cls, RelayguardError):
                outside.append(f"{name}.{cls_name}")
    assert outside == []
