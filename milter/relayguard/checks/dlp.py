"""DLP: the source's profile (or dlp.default_profile) applied to the text of every part.

The verdict names the profile and the detectors with their counts — never the matched data. Profile
actions: reject (550 5.7.1), quarantine (hold queue), tag (a header), encrypt-route (a header that
Postfix's milter_header_checks turns into the enforced-TLS transport `relayguard-tls`, see
postfix/README.md). A part that should hold text but cannot be read (a corrupt PDF) is reported
with dlp.unreadable_action: it was not scanned.
"""

from __future__ import annotations

from relayguard.checks import Check, CheckFunction, Stage, Subject
from relayguard.config import Config
from relayguard.config.dlp import DlpSettings
from relayguard.core.verdict import Action, Facts, FactValue, Verdict
from relayguard.dlp.profiles import Profile, ProfileAction, scan_parts, summary
from relayguard.parsing.mime import walk_message

NAME = "dlp"
TAG_HEADER = "X-Relayguard-DLP"
ROUTE_HEADER = "X-Relayguard-Route"
ROUTE_VALUE = "enforced-tls"  # postfix/milter_header_checks.j2 matches exactly this

PROFILE_ACTIONS = {
    ProfileAction.REJECT: Action.REJECT,
    ProfileAction.QUARANTINE: Action.QUARANTINE,
    ProfileAction.TAG: Action.TAG,
    ProfileAction.ENCRYPT_ROUTE: Action.TAG,
}


def make_check(settings: DlpSettings) -> CheckFunction:
    def check_dlp(subject: Subject) -> Verdict:
        assert subject.message is not None
        profile = settings.profile_for(subject.source)
        if profile is None:
            return Verdict(NAME, Action.ACCEPT, "no DLP profile for this source")
        walked = walk_message(subject.message, subject.config.content.limits)
        detectors = [settings.detectors[name] for name in profile.thresholds]
        scan = scan_parts(walked.parts, detectors, keep_matches=False)
        met = profile.triggered(scan.counts)
        if met:
            return _triggered(profile, met)
        if scan.unreadable:
            return Verdict(
                NAME,
                settings.unreadable_action,
                f"profile {profile.name}: {len(scan.unreadable)} part(s) not readable for DLP"
                f" ({scan.unreadable[0]})",
                error=True,
                facts={"profile": profile.name, "unreadable_parts": len(scan.unreadable)},
            )
        found = f"; below thresholds: {summary(scan.counts)}" if scan.counts else ""
        facts: dict[str, FactValue] = {"profile": profile.name, "parts": scan.scanned_parts}
        if scan.counts:
            facts["detectors"] = dict(scan.counts)
        return Verdict(
            NAME,
            Action.ACCEPT,
            f"profile {profile.name}: {scan.scanned_parts} part(s){found}",
            facts=facts,
        )

    return check_dlp


def _triggered(profile: Profile, met: dict[str, int]) -> Verdict:
    """Names the profile and the detectors with their counts: never what they matched."""
    counts = summary(met)
    action = PROFILE_ACTIONS[profile.action]
    facts: Facts = {"profile": profile.name, "detectors": dict(met)}
    if profile.action is ProfileAction.ENCRYPT_ROUTE:
        return Verdict(
            NAME,
            action,
            f"DLP profile {profile.name} ({counts}): routed over enforced TLS",
            headers=(
                (ROUTE_HEADER, ROUTE_VALUE),
                (TAG_HEADER, f"profile={profile.name}; {counts}"),
            ),
            facts=facts,
        )
    headers = ((TAG_HEADER, f"profile={profile.name}; {counts}"),) if action is Action.TAG else ()
    reason = f"DLP profile {profile.name} matched: {counts}"
    return Verdict(NAME, action, reason, headers=headers, facts=facts)


def compile_prefilters(settings: DlpSettings) -> None:
    """Compiles the Hyperscan prefilters of the detectors the profiles use (none without a
    profile: Hyperscan is then not even imported). See Prefilter.compile for when and why."""
    used = {
        id(detector.prefilter): detector.prefilter
        for profile in settings.profiles.values()
        for detector in (settings.detectors[name] for name in profile.thresholds)
        if detector.prefilter is not None
    }
    for prefilter in used.values():
        prefilter.compile()


def checks(config: Config) -> tuple[Check, ...]:
    if not config.content.dlp.profiles:
        return ()
    return (Check(NAME, Stage.END, make_check(config.content.dlp)),)
