#!/usr/bin/env bash
# Installs what the test suite needs: Debian packages (as root) and a Python virtual environment.
# Idempotent and quick when everything is already there (one dpkg query, one hash comparison).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

APT_PACKAGES=(
  postfix postfix-pcre          # the MTA under test, started per test in a temp dir
  dovecot-core                  # SASL authentication for submission
  swaks libnet-ssleay-perl      # a scriptable SMTP client for manual checks
  libmilter-dev gcc python3-dev # pymilter builds against libmilter
  python3-venv openssl ca-certificates
  clamav-daemon                 # clamd, started per test with a generated signature database
  p7zip-full                    # real encrypted / oversized 7z and zip archives for the clamd tests
  redis-server                  # the shared state backend, started per test on loopback
  nsd                           # authoritative DNS on loopback: DKIM keys and dns-audit test zones
  opendkim libmail-dkim-perl    # independent DKIM verifiers (C and Perl) for the signing tests
  vagrant systemd               # deploy tier: `vagrant validate`, `systemd-analyze verify` on units
  logrotate                     # deploy tier: `logrotate -d` on the milter role's rotation file
  prometheus                    # promtool: `check rules` / `test rules` on monitoring/prometheus
  rspamd                        # outbound spam scoring ([spam]): a normal worker per test run on loopback
  chromium chromium-driver      # the console's real-browser test (Selenium, no driver download)
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing Debian packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  # apt must not start the distribution's own services; the tests start private instances.
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$VENV/.relayguard-deps"
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
if [[ ! -f "$stamp" || $(cat "$stamp") != "$wanted" ]]; then
  echo "install-deps: installing Python packages into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[test]"
  echo "$wanted" >"$stamp"
fi
