#!/usr/bin/env bash
# Install the Debian packages Relais' tests and demo need, only those missing.
# Idempotent; non-interactive. Without root it only reports what is missing.
set -euo pipefail

PKGS=(
  nftables iproute2 iputils-ping procps curl     # the lab and the enforcement
  mosquitto mosquitto-clients                    # the real broker
  iperf3 dnsmasq-base                            # shaping measurements; DHCP/DNS
  chromium                                       # headless browser tests
  poppler-utils zbar-tools                       # voucher sheets: pdftotext, QR decoding
  nginx-light                                    # benchmark baselines
  wrk                                            # HTTP load generator (portal benchmark)
  kiwix-tools                                    # kiwix-serve: browsable offline Wikipedia (ZIM)
  zim-tools                                      # zimwriterfs: tiny ZIMs for the kiwix tests
  python3-venv
  postgresql                                     # the centre's registry tests: a throwaway cluster
  debootstrap                                    # throwaway Debian roots: Ansible role tests
  systemd-container                              # systemd-nspawn: boot such a root, units start
  freeradius freeradius-utils                    # RADIUS accounts tests: a real server, radclient
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing Debian packages (run as root to install): ${missing[*]}" >&2
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages must not start system services here (nginx, mosquitto): tests start their own.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
fi
trap '[ $created_policy -eq 1 ] && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
