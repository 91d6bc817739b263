#!/usr/bin/env bash
# The appliance under a real systemd, on a machine whose PID 1 is not systemd: a fresh Debian 12
# root filesystem (debootstrap), booted by systemd-nspawn with systemd as its PID 1, its own
# network namespace (only a veth link to this host, where an HTTP proxy gives it Debian's mirror
# and PyPI), and `make appliance` run inside from a fresh clone. docs/appliance-systemd.md says
# what it showed. Not part of CI: minutes of downloads, and it needs root and the network.
#
#   lab/systemd-lab.sh rootfs      # once: debootstrap into $LAB_DIR/base (about 1 min)
#   lab/systemd-lab.sh up          # copy base, clone this repo into it, boot it
#   lab/systemd-lab.sh appliance   # time `apt-get install git make` and `make appliance` inside
#   lab/systemd-lab.sh check       # units, hardening, three messages through the relay
#   lab/systemd-lab.sh sh [CMD…]   # a shell (or CMD) inside, with the proxy settings
#   lab/systemd-lab.sh down        # power the container off, stop the proxy
#
# LAB_DIR (default /var/lib/relayguard-lab), LAB_REPO (default: this checkout; HEAD is cloned,
# not the work tree), LAB_PATCH (a patch applied to the clone before `appliance`, to try a fix).
set -euo pipefail

LAB_DIR=${LAB_DIR:-/var/lib/relayguard-lab}
LAB_REPO=${LAB_REPO:-$(cd "$(dirname "$0")/.." && pwd)}
LAB_PATCH=${LAB_PATCH:-}
MACHINE=rglab
VETH=ve-$MACHINE
HOST_IP=10.77.0.1
GUEST_IP=10.77.0.2
PROXY=http://$HOST_IP:3128
BASE=$LAB_DIR/base
ROOT=$LAB_DIR/rootfs
RUN=$LAB_DIR/run
GUEST_REPO=/root/relayguard

die() { echo "systemd-lab: $*" >&2; exit 1; }

need_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

nspawn_pid() { cat "$RUN/nspawn.pid" 2>/dev/null; }

# The container's PID 1 (systemd): the only child of systemd-nspawn.
leader_pid() {
  local nspawn
  nspawn=$(nspawn_pid) || return 1
  [[ -n $nspawn && -d /proc/$nspawn ]] || return 1
  pgrep -P "$nspawn" | head -1
}

# A command inside the container: every namespace of its PID 1, a clean environment (nothing
# from this host leaks in) plus the proxy, as a login on a fresh machine would have it.
inside() {
  local leader
  leader=$(leader_pid) || die "the container is not running (lab/systemd-lab.sh up)"
  nsenter -t "$leader" -a -- env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    http_proxy="$PROXY" https_proxy="$PROXY" no_proxy=localhost,127.0.0.1,::1 "$@"
}

cmd_rootfs() {
  need_packages debootstrap systemd-container tinyproxy git
  [[ -x $BASE/lib/systemd/systemd ]] && { echo "systemd-lab: $BASE exists"; return; }
  rm -rf "$BASE"
  debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates,iproute2 \
    bookworm "$BASE"
}

# What the Debian installer would have written: sources with security updates, a host name.
prepare_rootfs() {
  local mirror # the one debootstrap wrote
  mirror=$(awk '$1 == "deb" { print $2; exit }' "$ROOT/etc/apt/sources.list")
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
    "$mirror" "$mirror" "$mirror" >"$ROOT/etc/apt/sources.list"
  echo "$MACHINE" >"$ROOT/etc/hostname"
  printf '127.0.0.1 localhost\n127.0.1.1 %s.lab.test %s\n::1 localhost ip6-localhost ip6-loopback\n' \
    "$MACHINE" "$MACHINE" >"$ROOT/etc/hosts"
  echo "Acquire::http::Proxy \"$PROXY\";" >"$ROOT/etc/apt/apt.conf.d/99lab-proxy"
  # Where this host's egress re-signs TLS, the guest needs the same extra CA (none elsewhere).
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/" 2>/dev/null || true
  git clone -q "$LAB_REPO" "$ROOT$GUEST_REPO"
}

start_proxy() {
  cat >"$RUN/tinyproxy.conf" <<EOF
Port 3128
Listen $HOST_IP
Timeout 600
User nobody
Group nogroup
Allow $HOST_IP/30
ConnectPort 443
LogLevel Notice
LogFile "$RUN/tinyproxy.log"
PidFile "$RUN/tinyproxy.pid"
EOF
  tinyproxy -c "$RUN/tinyproxy.conf"
}

cmd_up() {
  [[ -x $BASE/lib/systemd/systemd ]] || die "no $BASE: run lab/systemd-lab.sh rootfs first"
  leader_pid >/dev/null && die "already running (lab/systemd-lab.sh down first)"
  rm -rf "$ROOT" "$RUN"
  mkdir -p "$RUN"
  chmod 0755 "$RUN" # tinyproxy drops to nobody and writes its log here
  touch "$RUN/tinyproxy.log" && chown nobody "$RUN/tinyproxy.log"
  cp -a "$BASE" "$ROOT"
  prepare_rootfs
  # --register=no --keep-unit: this host has no systemd (no bus, no machined) to register with.
  setsid systemd-nspawn -D "$ROOT" -M "$MACHINE" --register=no --keep-unit --network-veth \
    -b --console=read-only >"$RUN/boot.log" 2>&1 </dev/null &
  echo $! >"$RUN/nspawn.pid"
  local state="" _
  for _ in $(seq 60); do
    state=$(inside systemctl is-system-running 2>/dev/null) || true
    [[ $state == running || $state == degraded ]] && break
    sleep 1
  done
  [[ $state == running || $state == degraded ]] || die "systemd did not come up ($state): $RUN/boot.log"
  ip addr add "$HOST_IP/30" dev "$VETH"
  ip link set "$VETH" up
  inside ip addr add "$GUEST_IP/30" dev host0
  inside ip link set host0 up
  inside ip route add default via "$HOST_IP"
  start_proxy
  inside update-ca-certificates >/dev/null
  echo "systemd-lab: $MACHINE is up, systemd is $state (boot log: $RUN/boot.log)"
}

# Wall-clock seconds of one command inside the container.
timed() {
  local label=$1 start end
  shift
  start=$(date +%s.%N)
  inside "$@"
  end=$(date +%s.%N)
  awk -v label="$label" -v s="$start" -v e="$end" 'BEGIN { printf "systemd-lab: %s took %.0f s\n", label, e - s }' |
    tee -a "$RUN/times"
}

cmd_appliance() {
  if [[ -n $LAB_PATCH ]]; then
    git -C "$ROOT$GUEST_REPO" apply "$LAB_PATCH"
  fi
  timed "apt-get install git make" bash -c \
    'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq git make >/dev/null'
  timed "make appliance" bash -c "cd $GUEST_REPO && make appliance"
}

# One message through submission; prints the audit line's action and reply.
send() {
  inside bash -c 'swaks --server 127.0.0.1:587 --tls --auth-user demo-device \
    --auth-password "$(cat /etc/relayguard/demo.password)" --from demo-device@example.com \
    --to someone@example.com "$@" >/dev/null 2>&1
    tail -1 /var/log/relayguard/audit.jsonl | python3 -c "import json, sys; d = json.load(sys.stdin); print(d[\"action\"], d[\"reply\"])"' \
    swaks "$@"
}

cmd_check() {
  inside systemctl is-system-running || true
  inside systemctl --failed --no-legend
  inside systemctl list-units --no-legend --all 'relayguard*' 'postfix*' 'dovecot*' 'clamav*'
  local unit
  for unit in $(inside bash -c 'cd /etc/systemd/system && ls relayguard-*.service'); do
    inside systemd-analyze security "$unit" --no-pager | tail -1
  done
  inside bash -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq swaks libnet-ssleay-perl >/dev/null'
  echo "accept: $(send)"
  echo "spoof:  $(send --h-From admin@example.com)"
  local eicar='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
  echo "eicar:  $(send --attach-type application/octet-stream --attach-body "$eicar")"
}

cmd_down() {
  local leader nspawn _
  if leader=$(leader_pid); then
    kill -RTMIN+4 "$leader" # systemd: power off
    nspawn=$(nspawn_pid)
    for _ in $(seq 60); do
      [[ -d /proc/$nspawn ]] || break
      sleep 1
    done
    [[ -d /proc/$nspawn ]] && kill "$nspawn"
  fi
  if [[ -s $RUN/tinyproxy.pid ]]; then
    kill "$(cat "$RUN/tinyproxy.pid")" 2>/dev/null || true
    rm -f "$RUN/tinyproxy.pid"
  fi
  echo "systemd-lab: down"
}

[[ $(id -u) -eq 0 ]] || die "run as root"
case ${1:-} in
  rootfs | up | appliance | check | down) "cmd_$1" ;;
  sh) shift; inside "${@:-bash}" ;;
  *) die "usage: $0 rootfs|up|appliance|check|sh [CMD…]|down" ;;
esac
