#!/usr/bin/env bash
# Installs what ezfs's build, tests and demo need on a Debian machine, if missing:
# FUSE, attr tools, SoftHSM2 (the PKCS#11 token of the tests), quota tools (setquota,
# for the quota test), systemd-analyze and man (the unit test), etcd (the etcd
# keystore's tests run real clusters: keystore/etcdtest), the Go modules.
set -euo pipefail
need=()
command -v fusermount3 >/dev/null || need+=(fuse3)
command -v getfattr >/dev/null || need+=(attr)
command -v xxd >/dev/null || need+=(xxd)
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v bc >/dev/null || need+=(bc)
command -v setquota >/dev/null || need+=(quota)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v man >/dev/null || need+=(man-db)
command -v etcd >/dev/null || need+=(etcd-server)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  apt-get update -qq
  # The tests start their own etcd servers on free ports, whether or not the
  # packaged service runs.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -e /dev/fuse ] || { echo "/dev/fuse is missing: ezfs needs FUSE" >&2; exit 1; }
go mod download
