"""A tiny pymilter milter that only exists to test tests/support/milter_client.py.

Run it as ``python tests/support/echo_milter.py unix:/path/sock``.

It reports what it saw in X-Echo-* headers added at end of message (JSON
values), and does what the message's ``X-Test-Action`` header asks: a comma
separated list of modifications (addheader, insheader, chgheader, quarantine,
replbody, addrcpt, delrcpt, chgfrom, progress, sleep) and at most one verdict
(accept, reject, tempfail, discard; default continue). ``X-Test-Sleep`` sets
the seconds for ``sleep`` (default 1).

Envelope rules: MAIL FROM <reject@test.invalid> gets "550 5.7.1 nope",
RCPT TO <tempfail@test.invalid> gets a plain TEMPFAIL.

Protocol choices, so the client's flag handling is exercised: ``hello`` and
``header`` are @noreply (SMFIP_NR_HELO, SMFIP_NR_HDR), ``data`` and
``unknown`` are not implemented (SMFIP_NODATA, SMFIP_NOUNKNOWN), and
the MAIL stage has a macro list (SETSYMLIST in the OPTNEG reply).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from typing import Any

import Milter

# Macros the milter looks for at every stage (pymilter cannot list them).
MACRO_NAMES = (
    "j",
    "_",
    "i",
    "{daemon_name}",
    "{client_addr}",
    "{client_name}",
    "{client_port}",
    "{auth_authen}",
    "{auth_type}",
    "{mail_addr}",
    "{rcpt_addr}",
    "{test_data}",
    "{test_eoh}",
    "{test_eom}",
)
CONTINUE: int = Milter.CONTINUE
VERDICTS: dict[str, int] = {
    "accept": Milter.ACCEPT,
    "reject": Milter.REJECT,
    "tempfail": Milter.TEMPFAIL,
    "discard": Milter.DISCARD,
}


def _addr(value: str) -> str:
    return value.strip().removeprefix("<").removesuffix(">").lower()


class EchoMilter(Milter.Base):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.macros: dict[str, str] = {}
        self.seen: dict[str, Any] = {}

    def _grab_macros(self) -> None:
        for name in MACRO_NAMES:
            value = self.getsymval(name)
            if value is not None:
                self.macros.setdefault(name, value)

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self._grab_macros()
        self.seen["connect"] = [hostname, int(family), hostaddr]
        return CONTINUE

    @Milter.noreply  # type: ignore[untyped-decorator]
    def hello(self, name: str) -> int:
        self._grab_macros()
        self.seen["helo"] = name
        return CONTINUE

    def negotiate(self, opts: list[int]) -> int:
        # pymilter 1.0.5's @Milter.symlist hands bytes to milterContext.setsymlist,
        # which wants str: negotiate() then silently answers ALL_OPTS and every
        # @noreply/@nocallback is lost. Set the list on the context directly.
        self._ctx.setsymlist(Milter.M_ENVFROM, "{auth_authen} {auth_type} {mail_addr}")
        result: int = super().negotiate(opts)
        return result

    def envfrom(self, sender: str, *params: str) -> int:
        self._grab_macros()
        self.seen.update(mail=[sender, *params], rcpts=[], headers=[], body=[0, 0])
        self.body_hash = hashlib.sha256()
        self.actions: list[str] = []
        self.sleep = 1.0
        if _addr(sender) == "reject@test.invalid":
            self.setreply("550", "5.7.1", "nope")
            return VERDICTS["reject"]
        return CONTINUE

    def envrcpt(self, rcpt: str, *params: str) -> int:
        self._grab_macros()
        if _addr(rcpt) == "tempfail@test.invalid":
            return VERDICTS["tempfail"]
        self.seen["rcpts"].append(rcpt)
        return CONTINUE

    @Milter.noreply  # type: ignore[untyped-decorator]
    def header(self, name: str, value: str) -> int:
        # libmilter refuses to add a header whose packet exceeds 65,535 bytes.
        shown = value if len(value) <= 200 else f"{value[:200]}...[{len(value)} chars]"
        self.seen["headers"].append([name, shown])
        if name.lower() == "x-test-action":
            self.actions = [a.strip().lower() for a in value.split(",") if a.strip()]
        elif name.lower() == "x-test-sleep":
            self.sleep = float(value)
        return CONTINUE

    def eoh(self) -> int:
        self._grab_macros()
        return CONTINUE

    def body(self, chunk: bytes) -> int:
        self.seen["body"][0] += len(chunk)
        self.seen["body"][1] += 1
        self.body_hash.update(chunk)
        return CONTINUE

    def eom(self) -> int:
        self._grab_macros()
        self.seen["body"].append(self.body_hash.hexdigest())
        self.addheader("X-Echo-Macros", json.dumps(self.macros, sort_keys=True))
        self.addheader("X-Echo-Protocol", hex(self._protocol))
        for key in ("connect", "helo", "mail", "rcpts", "headers", "body"):
            self.addheader(f"X-Echo-{key.capitalize()}", json.dumps(self.seen.get(key)))
        verdict = CONTINUE
        for action in self.actions:
            if action in VERDICTS:
                verdict = VERDICTS[action]
            else:
                self._modify(action)
        return verdict

    def _modify(self, action: str) -> None:
        if action == "addheader":
            self.addheader("X-Added", "yes")
        elif action == "insheader":
            self.addheader("X-Inserted", "first", idx=0)
        elif action == "chgheader":
            self.chgheader("Subject", 1, "changed subject")
            self.chgheader("X-Delete-Me", 1, "")
        elif action == "quarantine":
            self.quarantine("echo quarantine")
        elif action == "replbody":
            self.replacebody(b"replaced body\r\n")
        elif action == "addrcpt":
            self.addrcpt("<added@test.invalid>")
        elif action == "delrcpt":
            self.delrcpt("<deleted@test.invalid>")
        elif action == "chgfrom":
            self.chgfrom("<new-sender@test.invalid>")
        elif action == "progress":
            self.progress()
        elif action == "sleep":
            time.sleep(self.sleep)
        else:
            raise ValueError(f"unknown X-Test-Action {action!r}")


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: echo_milter.py unix:/path/to/socket")
    Milter.factory = EchoMilter
    print(f"echo milter listening on {sys.argv[1]}", flush=True)
    Milter.runmilter("echo-milter", sys.argv[1], timeout=60)


if __name__ == "__main__":
    main()
