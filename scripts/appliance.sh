#!/usr/bin/env bash
# The README's first command (`make appliance`): a fresh Debian 12 machine to a running relay.
# Installs ansible-core into its own virtual environment and applies ansible/site.yml to this
# machine (inventory ansible/inventories/local). Site settings: ansible/vars/site.yml; further
# arguments go to ansible-playbook (e.g. -e @my-site.yml, --check, -v).
set -euo pipefail

cd "$(dirname "$0")/.."
ANSIBLE_VENV=${ANSIBLE_VENV:-/opt/relayguard-ansible}
ANSIBLE_CORE=${ANSIBLE_CORE:-"ansible-core>=2.17,<2.20"}
# The controller's Python also runs the milter role's to_toml filter (the configuration file).
ANSIBLE_PACKAGES=("$ANSIBLE_CORE" "tomli-w>=1.0")
# The Vagrant lab passes its own inventory (and --limit) here.
INVENTORY=${RELAYGUARD_INVENTORY:-inventories/local/hosts.yml}

if [[ $(id -u) -ne 0 ]]; then
  echo "appliance: run as root (it installs packages and services)" >&2
  exit 1
fi

# Debian's Python runs the modules (the apt module needs python3-apt); venv for ansible-core.
missing=()
for pkg in python3 python3-venv python3-apt; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "appliance: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp="$ANSIBLE_VENV/.relayguard-ansible"
if [[ ! -x "$ANSIBLE_VENV/bin/ansible-playbook" || $(cat "$stamp" 2>/dev/null) != "${ANSIBLE_PACKAGES[*]}" ]]; then
  echo "appliance: installing ${ANSIBLE_PACKAGES[*]} into $ANSIBLE_VENV"
  /usr/bin/python3 -m venv "$ANSIBLE_VENV"
  "$ANSIBLE_VENV/bin/pip" install -q --disable-pip-version-check "${ANSIBLE_PACKAGES[@]}"
  echo "${ANSIBLE_PACKAGES[*]}" >"$stamp"
fi

cd ansible
export ANSIBLE_CONFIG="$PWD/ansible.cfg"
exec "$ANSIBLE_VENV/bin/ansible-playbook" -i "$INVENTORY" site.yml "$@"
