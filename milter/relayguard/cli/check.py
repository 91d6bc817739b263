"""`relayguard check`: validate the configuration; non-zero (and located errors) on problems."""

from __future__ import annotations

import argparse

from relayguard.cli import EXIT_OK, add_config_arg
from relayguard.config import Config, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arg(parser)
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(f"{args.config}: OK ({len(config.sources)} source(s), mode {config.relay.mode.value})")
    for warning in config_warnings(config):
        print(f"warning: {warning}")
    return EXIT_OK


def config_warnings(config: Config) -> list[str]:
    """Valid but probably not what the sysadmin meant."""
    warnings = []
    if config.relay.audit_log is None:
        warnings.append(
            f"{config.path}: relay.audit_log: not set; audit lines go to the milter log"
        )
    elif not config.relay.audit_log.parent.is_dir():
        warnings.append(
            f"{config.path}: relay.audit_log: directory {config.relay.audit_log.parent} missing"
        )
    clamav = config.content.clamav
    if clamav is not None and clamav.database_directory is not None:
        official = ("main.cvd", "main.cld", "daily.cvd", "daily.cld")
        if not any((clamav.database_directory / name).exists() for name in official):
            warnings.append(
                f"{config.path}: clamav.database_directory: no official ClamAV signatures"
                f" (main/daily) in {clamav.database_directory}; clamd has only a local set:"
                " run freshclam"
            )
    if not config.relay.internal_domains:
        warnings.append(
            f"{config.path}: relay.internal_domains: empty; unregistered clients using your"
            " domains are not called out"
        )
    return warnings
