#!/usr/bin/env bash
# A private iSCSI target daemon (Linux tgt) on 127.0.0.1, for trying the iSCSI provisioner on one machine
# and for Stowage's tests. It never touches the machine's own tgtd (if any): its control socket lives in DIR.
#
#   start-tgtd.sh start DIR   starts tgtd, prints KEY=VALUE lines (PORTAL, SOCKET, CONTROL_PORT, PID)
#   start-tgtd.sh stop DIR    takes it offline, deletes its targets, stops it, removes its sockets
#
# The iSCSI port is asked of the OS, never fixed. tgtadm reaches this daemon with
# `TGT_IPC_SOCKET=DIR/tgtd.sock tgtadm -C N ...` (the socket file is DIR/tgtd.sock.N).
set -euo pipefail

usage() { echo "usage: $0 start DIR | stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
mode=$1
dir=$(realpath -m "$2")
sock=$dir/tgtd.sock

tgtadm_() { TGT_IPC_SOCKET=$sock tgtadm -C "$(cat "$dir/control_port")" "$@"; }

stop_tgtd() {
  [[ -f $dir/pid ]] || return 0
  local pid tids
  pid=$(cat "$dir/pid")
  if kill -0 "$pid" 2>/dev/null; then
    # tgtd ignores SIGTERM while it has targets: offline first (no new logins), then drop every target.
    tgtadm_ --mode sys --op update --name State -v offline >/dev/null 2>&1 || true
    tids=$(tgtadm_ --lld iscsi --mode target --op show 2>/dev/null | sed -n 's/^Target \([0-9]*\):.*/\1/p' || true)
    for tid in $tids; do tgtadm_ --lld iscsi --mode target --op delete --force --tid "$tid" >/dev/null 2>&1 || true; done
    tgtadm_ --mode sys --op delete >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$dir/pid" "$sock".* "$dir/control_port"
}

if [[ $mode == stop ]]; then stop_tgtd; exit 0; fi
[[ $mode == start ]] || usage
for tool in tgtd tgtadm; do
  command -v "$tool" >/dev/null || { echo "start-tgtd: $tool is missing (Debian: tgt)" >&2; exit 1; }
done
if [[ -e $dir/pid ]]; then echo "start-tgtd: $dir already has a running tgtd (run: $0 stop $dir)" >&2; exit 1; fi
mkdir -p "$dir"
trap 'stop_tgtd' ERR

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The control port only names the socket file; pick one no tgtd on this host announces (the system tgtd uses 0).
control=
for _ in $(seq 100); do
  n=$((RANDOM % 9000 + 1000))
  if ! ls /var/run/tgtd/socket."$n" "$sock.$n" >/dev/null 2>&1 && ! pgrep -f -- "tgtd .*-C $n( |$)" >/dev/null; then control=$n; break; fi
done
[[ -n $control ]] || { echo "start-tgtd: no free control port" >&2; exit 1; }
echo "$control" >"$dir/control_port"

TGT_IPC_SOCKET=$sock setsid tgtd -f -C "$control" --iscsi portal="127.0.0.1:$port" >"$dir/tgtd.log" 2>&1 </dev/null &
echo $! >"$dir/pid"
ready=0
for _ in $(seq 100); do
  if tgtadm_ --mode sys --op show >/dev/null 2>&1 \
     && python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2).close()" 2>/dev/null; then ready=1; break; fi
  kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
  sleep 0.02
done
if ((!ready)); then echo "start-tgtd: tgtd did not come up:" >&2; cat "$dir/tgtd.log" >&2; stop_tgtd; exit 1; fi
echo "PORTAL=127.0.0.1:$port"
echo "SOCKET=$sock"
echo "CONTROL_PORT=$control"
echo "PID=$(cat "$dir/pid")"
