"""[content]: the MIME walker's limits, and ContentSettings, every content section together.

The scanner sections live in config/scanners.py ([clamav], [yara]), config/dlp.py and
config/urls.py; config/reader.py joins them here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from relayguard.config.declare import FAILURE_ACTIONS, actions, number
from relayguard.config.dlp import DlpSettings
from relayguard.config.scanners import ClamavSettings, YaraSettings
from relayguard.config.urls import UrlSettings
from relayguard.core.verdict import Action
from relayguard.parsing.mime import WalkLimits

_WALK = WalkLimits()  # the defaults live with the walker


@dataclass(frozen=True, slots=True)
class ContentLimits:
    """The [content] table."""

    max_depth: int = number(_WALK.max_depth, 1, 100)
    max_parts: int = number(_WALK.max_parts, 1, 100_000)
    max_decoded_bytes: int = number(_WALK.max_decoded_bytes, 1024, 2**34)
    max_archive_members: int = number(_WALK.max_archive_members, 1, 100_000)
    max_expansion_ratio: int = number(_WALK.max_expansion_ratio, 2, 100_000)
    limit_action: Action = actions("quarantine", FAILURE_ACTIONS)
    encrypted_action: Action = actions("quarantine", FAILURE_ACTIONS)

    def walk_limits(self) -> WalkLimits:
        return WalkLimits(
            max_depth=self.max_depth,
            max_parts=self.max_parts,
            max_decoded_bytes=self.max_decoded_bytes,
            max_archive_members=self.max_archive_members,
            max_expansion_ratio=self.max_expansion_ratio,
        )


_LIMITS = ContentLimits()


@dataclass(frozen=True, slots=True)
class ContentSettings:
    limits: WalkLimits = field(default_factory=WalkLimits)
    limit_action: Action = _LIMITS.limit_action
    encrypted_action: Action = _LIMITS.encrypted_action
    clamav: ClamavSettings | None = None
    yara: YaraSettings | None = None
    dlp: DlpSettings = field(default_factory=DlpSettings)
    urls: UrlSettings | None = None

    @property
    def walks_content(self) -> bool:
        """Whether a check reads the decoded MIME walk (YARA, DLP, URLs): the walk's limits check
        runs only then. clamd decodes the raw message itself and reports its own limits and
        encrypted content (checks/clamav.py), so ClamAV alone needs no walk."""
        return bool(self.yara or self.dlp.profiles or self.urls)
