#!/usr/bin/env bash
# A throw-away NFS server: nfs-ganesha (VFS export of a directory) plus rpcbind, both inside a
# private network and mount namespace, so nothing binds a port on the host (rpcbind needs port
# 111, and NFSv3 clients need rpcbind) and ganesha's /run files stay private.
#
#   start-ganesha.sh start DIR [--export PATH]   export PATH (default DIR/export) read-write
#   start-ganesha.sh stop DIR                    stop what `start` started in DIR, nothing else
#
# `start` prints shell assignments (NFS_NETNS_PID, NFS_NETNS, NFS_SERVER, NFS_EXPORT, NFS_URL_V3,
# NFS_URL_V4, NFS_PORT, MNT_PORT) and how to reach the server: clients run in the namespace,
# e.g. `nsenter --net=$NFS_NETNS nfs-ls "$NFS_URL_V3"`.
set -euo pipefail

usage() { echo "usage: $0 start DIR [--export PATH] | stop DIR" >&2; exit 2; }

wait_for() {  # wait_for SECONDS COMMAND...: poll with back-off until COMMAND succeeds
  local deadline=$((SECONDS + $1)) delay=0.01; shift
  local rc
  while true; do
    rc=0; "$@" >/dev/null 2>&1 || rc=$?
    ((rc == 0)) && return 0
    ((rc != 2 && SECONDS < deadline)) || return 1
    sleep "$delay"; delay=$(awk -v d="$delay" 'BEGIN { d *= 2; print (d > 0.2 ? 0.2 : d) }')
  done
}

# Running, not merely unreaped: a process whose parent exited waits for the host's init to reap it.
alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null && [[ $(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
gone() { ! alive "$1"; }

stop_pid() {  # stop_pid PIDFILE GRACE: SIGTERM, then SIGKILL after GRACE seconds (a throw-away server)
  local file=$1 grace=$2 pid
  [[ -f $file ]] || return 0
  pid=$(cat "$file" 2>/dev/null || true)
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$grace" gone "$pid"; then kill -KILL "$pid" 2>/dev/null || true; wait_for 5 gone "$pid" || true; fi
  fi
  rm -f "$file"
}

cmd=${1:-}; dir=${2:-}
[[ -n $cmd && -n $dir ]] || usage
shift 2

case $cmd in
start)
  export_path=""
  while (($#)); do
    case $1 in
      --export) export_path=${2:?--export needs a path}; shift 2 ;;
      *) usage ;;
    esac
  done
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  export_path=${export_path:-$dir/export}
  mkdir -p "$export_path"
  export_path=$(cd "$export_path" && pwd)
  if alive "$(cat "$dir/holder.pid" 2>/dev/null || true)"; then echo "already running in $dir" >&2; exit 1; fi

  # The namespace holder: a private network and a private /run, so rpcbind's socket and ganesha's
  # /run/ganesha never touch the host. Besides lo's own addresses it needs one non-loopback
  # address: ganesha resolves Bind_Addr with AI_ADDRCONFIG, which ignores loopback addresses and
  # fails ("No IP address found for 127.0.0.1") in a namespace that has nothing else.
  # The holder writes its own pid (setsid may fork, so $! is not always it).
  rm -f "$dir/holder.pid"
  setsid unshare --net --mount --propagation private -- \
    sh -c 'ip link set lo up && ip addr add fd00:5707:a6e::1/128 dev lo && mount -t tmpfs -o mode=0755 stowage-nfs-run /run && echo $$ >"$1" && exec sleep infinity' \
    holder "$dir/holder.pid" </dev/null >"$dir/holder.log" 2>&1 &
  if ! wait_for 5 test -s "$dir/holder.pid"; then
    echo "namespace holder did not start: $(cat "$dir/holder.log")" >&2; exit 1
  fi
  holder=$(cat "$dir/holder.pid")
  in_ns() { nsenter --target "$holder" --net --mount -- "$@"; }
  # Ready when lo is up and /run is the private tmpfs.
  if ! wait_for 5 in_ns sh -c 'ip -o link show lo | grep -q UP && grep -q "^stowage-nfs-run /run tmpfs" /proc/self/mounts'; then
    echo "namespace holder did not come up: $(cat "$dir/holder.log")" >&2; "$0" stop "$dir"; exit 1
  fi

  # Ports in a private namespace are free by construction; still ask the kernel for them.
  read -r nfs_port mnt_port nlm_port rq_port < <(in_ns python3 -c '
import socket
socks = [socket.socket() for _ in range(4)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')

  mkdir -p "$dir/recovery"
  cat >"$dir/ganesha.conf" <<EOF
NFS_CORE_PARAM {
  Bind_Addr = 127.0.0.1;
  NFS_Port = $nfs_port; MNT_Port = $mnt_port; NLM_Port = $nlm_port; Rquota_Port = $rq_port;
  Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false;
  Protocols = 3, 4;
}
NFSV4 { Graceless = true; RecoveryBackend = fs; RecoveryRoot = "$dir/recovery"; }
EXPORT {
  Export_Id = 1; Path = "$export_path"; Pseudo = "/export";
  Access_Type = RW; Squash = No_Root_Squash; SecType = sys; Transports = TCP; Protocols = 3, 4;
  # Changes made straight in the exported directory must be seen by clients at once.
  Attr_Expiration_Time = 0;
  FSAL { Name = VFS; }
}
EOF

  nsenter --target "$holder" --net --mount -- rpcbind -f -w </dev/null >"$dir/rpcbind.log" 2>&1 &
  echo $! >"$dir/rpcbind.pid"
  if ! wait_for 5 in_ns rpcinfo -p 127.0.0.1; then
    echo "rpcbind did not start: $(cat "$dir/rpcbind.log")" >&2; "$0" stop "$dir"; exit 1
  fi

  started=$(date +%s.%N)
  BLKID_FILE="$dir/blkid.tab" nsenter --target "$holder" --net --mount -- \
    ganesha.nfsd -F -f "$dir/ganesha.conf" -L "$dir/ganesha.log" -p "$dir/ganesha.nfsd.pid" -N NIV_EVENT \
    </dev/null >"$dir/ganesha.out" 2>&1 &
  echo $! >"$dir/ganesha.pid"
  # Ready when both versions are registered and the export answers over NFSv3.
  ganesha_ready() {
    alive "$(cat "$dir/ganesha.pid")" || return 2  # exited: no point waiting
    in_ns sh -c "rpcinfo -p 127.0.0.1 | grep -q ' 3 *tcp *$nfs_port *nfs' && nfs-ls 'nfs://127.0.0.1$export_path?version=3'"
  }
  if ! wait_for 20 ganesha_ready || ! ganesha_ready; then
    echo "ganesha did not start; its log:" >&2; tail -20 "$dir/ganesha.log" >&2 || true; "$0" stop "$dir"; exit 1
  fi
  ready=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')

  cat <<EOF
NFS_NETNS_PID=$holder
NFS_NETNS=/proc/$holder/ns/net
NFS_SERVER=127.0.0.1
NFS_EXPORT=$export_path
NFS_PORT=$nfs_port
MNT_PORT=$mnt_port
NFS_URL_V3='nfs://127.0.0.1$export_path?version=3'
NFS_URL_V4='nfs://127.0.0.1/export?version=4&nfsport=$nfs_port'
NFS_READY_SECONDS=$ready
# The server is reachable only inside its network namespace, e.g.:
#   nsenter --net=/proc/$holder/ns/net nfs-ls 'nfs://127.0.0.1$export_path?version=3'
EOF
  ;;
stop)
  [[ -d $dir ]] || exit 0
  dir=$(cd "$dir" && pwd)
  # Only the processes this script recorded, server first so it can unregister from rpcbind.
  # ganesha needs 1-2 s after SIGTERM.
  stop_pid "$dir/ganesha.pid" 5
  rm -f "$dir/ganesha.nfsd.pid"
  stop_pid "$dir/rpcbind.pid" 1
  # The holder's exit tears down the namespaces (and the private /run with them).
  stop_pid "$dir/holder.pid" 5
  ;;
*) usage ;;
esac
