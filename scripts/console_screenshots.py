"""Refresh docs/console/*.png: run the console's browser test with screenshots on.

The pictures come from the same session as tests/e2e/test_console_browser.py (real Postfix, the
milter, `relayguard console serve`, headless chromium at 1280x800), so what the README shows is
what the test saw. Needs root, like the other e2e tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/e2e/test_console_browser.py"


def main() -> int:
    environment = dict(os.environ, RELAYGUARD_CONSOLE_SCREENSHOTS=str(ROOT / "docs" / "console"))
    command = [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider"]
    return subprocess.run(command, cwd=ROOT, env=environment, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
