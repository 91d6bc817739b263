"""The protocol floor: the smallest pymilter milter, accepting everything.

What Postfix pays for talking the milter protocol at all, so relayguard's own cost can be read as
a ratio against it. Usage: floor_milter.py unix:/path/to/socket
"""

from __future__ import annotations

import os
import sys

import Milter


class Floor(Milter.Base):  # type: ignore[misc]
    @Milter.noreply  # type: ignore[untyped-decorator]
    def header(self, name: str, value: bytes) -> int:
        return Milter.CONTINUE  # type: ignore[no-any-return]

    @Milter.noreply  # type: ignore[untyped-decorator]
    def body(self, chunk: bytes) -> int:
        return Milter.CONTINUE  # type: ignore[no-any-return]

    def eom(self) -> int:
        return Milter.ACCEPT  # type: ignore[no-any-return]


def main() -> None:
    spec = sys.argv[1]
    Milter.factory = Floor
    # smtpd runs as user postfix; runmilter gives no hook to chown the socket, so this bench-only
    # milter opens it to everyone (in the benchmark's private 0755 directory).
    os.umask(0)
    Milter.runmilter("floor", spec, 60)


if __name__ == "__main__":
    main()
