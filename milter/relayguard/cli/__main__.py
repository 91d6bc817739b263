"""`python -m relayguard.cli`: the same entry point as the relayguard command."""

import sys

from relayguard.cli import main

sys.exit(main())
