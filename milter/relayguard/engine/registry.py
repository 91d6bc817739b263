"""The shape of the pipeline: which checks, transforms and observers run, in which order.

Each entry is a factory that builds its parts from one configuration snapshot (and may return
nothing when its feature is off), so a feature plugs in with one line here and knows nothing about
pymilter, the adapter or the other features. Order matters: cheap policy before expensive content
scanning (enforce mode stops at the first rejection), DKIM signing as the last transform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from relayguard.checks import (
    Check,
    clamav,
    dlp,
    killswitch,
    mime_limits,
    ratelimit,
    recipients,
    sender,
    spam,
    suppression,
    urls,
    yara,
)
from relayguard.config import Config
from relayguard.core.audit_record import AuditRecord
from relayguard.engine import anomaly_observer
from relayguard.transforms import Transform, outbound, signing, trace, unsubscribe

# An observer sees every audit record after it is written (metrics); it cannot change a decision.
Observer = Callable[[AuditRecord], None]

CHECKS: tuple[Callable[[Config], Sequence[Check]], ...] = (
    killswitch.checks,  # right after source identification: a disabled source goes no further
    ratelimit.checks,
    sender.checks,
    recipients.checks,
    suppression.checks,  # unsubscribed recipients, one recipient per bulk message
    mime_limits.checks,  # content: the walk's limits first, then the scanners sharing it
    clamav.checks,
    yara.checks,
    dlp.checks,
    urls.checks,
    spam.checks,  # after the content checks: Rspamd's HTTP round trip only for mail they passed
)

TRANSFORMS: tuple[Callable[[Config], Sequence[Transform]], ...] = (
    trace.transforms,
    unsubscribe.transforms,  # List-Unsubscribe before signing: the signature covers it
    outbound.transforms,  # the path header (Postfix routes on it), for mail that passed policy
    signing.transforms,  # must stay last: the signature covers what the transforms before added
)


def metrics_observers(config: Config) -> Sequence[Observer]:
    """prometheus_client costs ~60 ms to import: only a process that counts (a milter worker)
    pays it, never `relayguard test-message` or `--help`, which build no observers."""
    from relayguard import metrics  # noqa: PLC0415

    return metrics.observers(config)


OBSERVERS: tuple[Callable[[Config], Sequence[Observer]], ...] = (
    metrics_observers,
    anomaly_observer.observers,  # learns each source's baseline; may lock it (kill switch)
)


def build_checks(config: Config) -> tuple[Check, ...]:
    return tuple(check for factory in CHECKS for check in factory(config))


def build_transforms(config: Config) -> tuple[Transform, ...]:
    return tuple(transform for factory in TRANSFORMS for transform in factory(config))


def build_observers(config: Config) -> tuple[Observer, ...]:
    return tuple(observer for factory in OBSERVERS for observer in factory(config))
