#!/usr/bin/env bash
# Install everything Corral needs on a Debian 12 machine, as root: the system packages (Docker
# Engine, busybox-static for the base image, debootstrap for the lab's images from Debian packages,
# iproute2, iptables, the lab's registry and its htpasswd, the benchmark references, chromium for the web UI's browser test) and the corral package with its test tools into ./.venv. Safe to run
# again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "scripts/install.sh: run as root (it installs Debian packages and the lab needs root)" >&2
  exit 1
fi

packages=(docker.io busybox-static debootstrap iproute2 iptables util-linux procps ca-certificates
          docker-registry apache2-utils iperf3 wireguard-go etcd-server
          dnsmasq-base dnsperf haproxy wrk chromium)
if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  packages+=(python3-venv)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
new_registry=no
for p in "${missing[@]}"; do [ "$p" = docker-registry ] && new_registry=yes; done
# `corral lab up --registry` runs docker-registry itself, on the lab bridge's address. The package's
# own service would listen on :5000 of every address: keep it from starting when we install it
# (a registry that was there before is left as its owner set it up).
if [ "$new_registry" = yes ] && [ -d /run/systemd/system ]; then
  systemctl mask docker-registry.service
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "$new_registry" = yes ] && [ ! -d /run/systemd/system ]; then
  /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
  update-rc.d docker-registry disable >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "installed: $(.venv/bin/corral --version)"
