#!/usr/bin/env bash
# A throw-away one-node Ceph cluster (monitor, manager, one in-memory OSD, one MDS) on 127.0.0.1,
# for trying examples/ceph on one machine and for Stowage's tests. Not for data you want to keep:
# the OSD keeps everything in memory.
#
#   start-cluster.sh start DIR [--no-mds]   writes DIR/ceph.conf and DIR/ceph.client.admin.keyring,
#                                           prints KEY=VALUE lines (fsid, monitor address, admin key)
#   start-cluster.sh stop DIR               kills the daemons this script started from DIR
#   start-cluster.sh objects DIR            creates the pool `rbd` and the subvolume group `csi`, and
#                                           prints the Secrets and ceph-csi's ConfigMap (clusterID
#                                           "example") that the example classes refer to, as YAML
#
# CEPH_READY_TIMEOUT (seconds, default 180): how long start waits for the OSD and, with the MDS, the
# manager's volumes module; a loaded machine (a parallel test run) needs well over a minute for the latter.
#
# Every daemon runs in the foreground of a background job, logging under DIR; its pid goes to DIR/pids,
# so stop only ever touches processes it started. The monitor's port is asked of the OS, never fixed.
set -euo pipefail

usage() { echo "usage: $0 start DIR [--no-mds] | stop DIR | objects DIR" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
mode=$1
dir=$(realpath -m "$2")
shift 2

stop_cluster() {
  [[ -f $dir/pids ]] || return 0
  local pids
  pids=$(cat "$dir/pids")
  # Daemons are slow to stop on SIGTERM (an MDS takes about 10 s); the cluster is thrown away.
  for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in $pids; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  rm -f "$dir/pids"
}

if [[ $mode == stop ]]; then stop_cluster; exit 0; fi
if [[ $mode == objects ]]; then
  conf=(-c "$dir/ceph.conf")
  [[ -f $dir/ceph.conf ]] || { echo "start-cluster: no cluster in $dir (run: $0 start $dir)" >&2; exit 1; }
  ceph "${conf[@]}" osd pool ls | grep -qx rbd || { ceph "${conf[@]}" osd pool create rbd 8 >/dev/null 2>&1; rbd "${conf[@]}" pool init rbd; }
  ceph "${conf[@]}" fs subvolumegroup create cephfs csi
  key=$(ceph-authtool -p "$dir/ceph.client.admin.keyring" -n client.admin)
  monitors=$(sed -n 's/^mon host = \[v2:\(.*\)\]$/\1/p' "$dir/ceph.conf")
  cat <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: ceph-csi-config
  namespace: kube-system
data:
  config.json: '[{"clusterID": "example", "monitors": ["$monitors"], "cephFS": {"subvolumeGroup": "csi"}}]'
---
apiVersion: v1
kind: Secret
metadata:
  name: csi-rbd-secret
  namespace: default
stringData:
  userID: admin
  userKey: $key
---
apiVersion: v1
kind: Secret
metadata:
  name: csi-cephfs-secret
  namespace: default
stringData:
  adminID: admin
  adminKey: $key
  userID: admin
  userKey: $key
YAML
  exit 0
fi
[[ $mode == start ]] || usage
with_mds=1
[[ ${1:-} == --no-mds ]] && with_mds=0

for tool in ceph-mon ceph-osd ceph-mgr ceph-authtool monmaptool ceph; do
  command -v "$tool" >/dev/null || { echo "start-cluster: $tool is missing (Debian: ceph-mon ceph-osd ceph-mgr ceph-mds ceph-common)" >&2; exit 1; }
done
if [[ -e $dir/pids ]]; then echo "start-cluster: $dir already has a running cluster (run: $0 stop $dir)" >&2; exit 1; fi
mkdir -p "$dir"
trap 'stop_cluster' ERR

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
fsid=$(python3 -c 'import uuid; print(uuid.uuid4())')
mon="v2:127.0.0.1:$port"

cat >"$dir/ceph.conf" <<CONF
[global]
fsid = $fsid
mon host = [$mon]
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/ceph.client.admin.keyring
run dir = $dir/run
log file = $dir/log/\$name.log
admin socket = $dir/run/\$name.\$pid.asok
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
mon data avail warn = 1
mon data avail crit = 0
mon warn on pool no redundancy = false
paxos propose interval = 0.05
paxos min wait = 0.01
mon cluster log file = $dir/log/cluster.log
ms bind ipv4 = true
ms bind ipv6 = false
mon_osd_down_out_interval = 0
osd objectstore = memstore
memstore device bytes = 4294967296
osd max object name len = 256
osd max object namespace len = 64
mds beacon grace = 15
[mon.a]
mon data = $dir/mon.a
keyring = $dir/mon.keyring
public addr = 127.0.0.1:$port
[osd.0]
osd data = $dir/osd.0
keyring = $dir/osd.0/keyring
[mgr.x]
mgr data = $dir/mgr.x
keyring = $dir/mgr.x/keyring
[mds.a]
mds data = $dir/mds.a
keyring = $dir/mds.a/keyring
CONF
mkdir -p "$dir/run" "$dir/log" "$dir/mon.a" "$dir/osd.0" "$dir/mgr.x" "$dir/mds.a"
conf=(-c "$dir/ceph.conf")

ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
ceph-authtool --create-keyring "$dir/ceph.client.admin.keyring" --gen-key -n client.admin \
  --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/ceph.client.admin.keyring" >/dev/null
chmod 600 "$dir/mon.keyring" "$dir/ceph.client.admin.keyring"
monmaptool --create --fsid "$fsid" --addv a "[$mon]" "$dir/monmap" >/dev/null
ceph-mon "${conf[@]}" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring"

start_daemon() {  # name, command...
  local name=$1; shift
  "$@" >"$dir/log/$name.out" 2>&1 &
  echo $! >>"$dir/pids"
}
start_daemon mon.a ceph-mon "${conf[@]}" -f -i a

# The OSD: registered, keyed and made before it starts.
osd_key=$(ceph-authtool --gen-print-key)
printf '{"cephx_secret": "%s"}' "$osd_key" >"$dir/osd.0/new.json"
osd_uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
ceph "${conf[@]}" --connect-timeout 20 osd new "$osd_uuid" -i "$dir/osd.0/new.json" >/dev/null
rm -f "$dir/osd.0/new.json"
ceph-authtool --create-keyring "$dir/osd.0/keyring" --name osd.0 --add-key "$osd_key" >/dev/null
ceph-osd "${conf[@]}" -i 0 --mkfs --osd-uuid "$osd_uuid" >"$dir/log/osd.0.mkfs" 2>&1
start_daemon osd.0 ceph-osd "${conf[@]}" -f -i 0

ceph "${conf[@]}" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$dir/mgr.x/keyring" >/dev/null
start_daemon mgr.x ceph-mgr "${conf[@]}" -f -i x

if ((with_mds)); then
  ceph "${conf[@]}" auth get-or-create mds.a mon 'allow profile mds' osd 'allow rwx' mds 'allow' mgr 'allow profile mds' \
    -o "$dir/mds.a/keyring" >/dev/null
  start_daemon mds.a ceph-mds "${conf[@]}" -f -i a
fi

# Ready when the OSD is up (pools can take data) and, with an MDS, a file system exists.
ready_timeout=${CEPH_READY_TIMEOUT:-180}
deadline=$((SECONDS + ready_timeout))
until ((SECONDS > deadline)); do
  if ceph "${conf[@]}" osd stat -f json 2>/dev/null | python3 -c 'import json,sys; sys.exit(json.load(sys.stdin).get("num_up_osds",0) < 1)'; then break; fi
  sleep 0.2
done
if ((SECONDS > deadline)); then echo "start-cluster: the OSD did not come up within $ready_timeout s (see $dir/log)" >&2; stop_cluster; exit 1; fi
if ((with_mds)); then
  ceph "${conf[@]}" osd pool create cephfs_metadata 8 >/dev/null 2>&1
  ceph "${conf[@]}" osd pool create cephfs_data 8 >/dev/null 2>&1
  ceph "${conf[@]}" fs new cephfs cephfs_metadata cephfs_data >/dev/null 2>&1
  # Subvolume commands are served by the manager's volumes module: wait until it answers.
  until ceph "${conf[@]}" --connect-timeout 5 fs subvolumegroup ls cephfs >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "start-cluster: the manager did not serve 'fs subvolumegroup ls' within $ready_timeout s" >&2; stop_cluster; exit 1; fi
    sleep 0.2
  done
fi
trap - ERR
admin_key=$(ceph-authtool -p "$dir/ceph.client.admin.keyring" -n client.admin)
echo "FSID=$fsid"
echo "MONITORS=127.0.0.1:$port"
echo "CONF=$dir/ceph.conf"
echo "ADMIN_KEYRING=$dir/ceph.client.admin.keyring"
