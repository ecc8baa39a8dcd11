#!/usr/bin/env bash
# A throw-away private glusterd on 127.0.0.1, for trying Stowage's GlusterFS support and for its tests.
#
#   start-glusterd.sh start STATE_DIR        start glusterd; state (config, sockets, bricks, logs) under STATE_DIR
#   start-glusterd.sh mount STATE_DIR VOL DIR FUSE-mount volume VOL at DIR (recorded, so `stop` unmounts it)
#   start-glusterd.sh stop  STATE_DIR        unmount recorded FUSE mounts, stop volumes, kill glusterd and
#                                            the brick/self-heal processes it started, remove the files it
#                                            created under /var/run/gluster and /var/log/glusterfs
#
# glusterd's management port 24007 cannot be moved, so there is one such glusterd per host: `start`
# refuses when 24007 is already taken. Only processes recorded in STATE_DIR (or whose pid files live in
# STATE_DIR/run) are ever signalled.
set -euo pipefail

PORT=24007
SYSTEM_DIRS=(/var/run/gluster /var/log/glusterfs)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

port_taken() { ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q .; }

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

# Kill pid $1 (TERM, then KILL after $2 seconds) when its command line contains $3 (a guard against pid reuse).
kill_own() {
  local pid=$1 wait=$2 guard=$3 i
  alive "$pid" || return 0
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$guard" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < wait * 10; i++)); do alive "$pid" || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cmd_start() {
  local state=$1
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  if [[ -f $state/glusterd.pid ]] && alive "$(cat "$state/glusterd.pid")"; then
    echo "start-glusterd: already running (pid $(cat "$state/glusterd.pid")) with state in $state" >&2
    exit 1
  fi
  if port_taken; then
    echo "start-glusterd: port $PORT on this host is already in use (another glusterd?); glusterd's port cannot be moved, so only one test glusterd can run per host" >&2
    exit 3
  fi
  mkdir -p "$state/work" "$state/run" "$state/bricks" "$state/logs" "$state/mnt" "${SYSTEM_DIRS[@]}"
  # What already exists in the system directories glusterd insists on: `stop` removes only what is new.
  : >"$state/system-before"
  for d in "${SYSTEM_DIRS[@]}"; do find "$d" -mindepth 1 >>"$state/system-before"; done
  : >"$state/mounts"
  cat >"$state/glusterd.vol" <<EOF
volume management
    type mgmt/glusterd
    option working-directory $state/work
    option run-directory $state/run
    option glusterd-sockfile $state/glusterd.sock
    option transport-type socket
    option transport.socket.bind-address 127.0.0.1
    option transport.address-family inet
    option transport.socket.listen-port $PORT
    option ping-timeout 0
    option event-threads 1
end-volume
EOF
  local t0 i
  t0=$(date +%s%N)
  setsid glusterd -N -f "$state/glusterd.vol" -l "$state/logs/glusterd.log" </dev/null >>"$state/logs/glusterd.out" 2>&1 &
  echo $! >"$state/glusterd.pid"
  # The first CLI call before the socket exists stalls for seconds: wait for it (and the port).
  for ((i = 0; i < 300; i++)); do
    if [[ -S $state/glusterd.sock ]] && port_taken; then break; fi
    if ! alive "$(cat "$state/glusterd.pid")"; then
      echo "start-glusterd: glusterd exited; see $state/logs/glusterd.log" >&2
      exit 1
    fi
    sleep 0.05
  done
  if ! [[ -S $state/glusterd.sock ]]; then
    echo "start-glusterd: glusterd's socket did not appear within 15 s; see $state/logs/glusterd.log" >&2
    cmd_stop "$state"
    exit 1
  fi
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  cat <<EOF
glusterd is up on 127.0.0.1:$PORT (pid $(cat "$state/glusterd.pid"), ${ms} ms)
  socket:   $state/glusterd.sock
  CLI:      gluster --mode=script --glusterd-sock=$state/glusterd.sock volume list
  bricks:   write brick hosts as 127.1 (the CLI refuses 127.0.0.1), e.g.
            gluster --mode=script --glusterd-sock=$state/glusterd.sock volume create v1 127.1:$state/bricks/v1 force
  class:    provisioner: kubernetes.io/glusterfs, parameters: {glusterSocket: $state/glusterd.sock, brickRoot: $state/bricks}
  stop:     $0 stop $state
EOF
}

cmd_mount() {
  local state vol dir
  state=$(cd "$1" && pwd) vol=$2 dir=$3
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  mount -t glusterfs -o "log-file=$state/logs/mount-${vol}.log" "127.0.0.1:/$vol" "$dir"
  echo "$dir" >>"$state/mounts"
}

# Unmount: plain first, forced (aborts the FUSE connection of a hung client) after 5 s, lazy last.
unmount_fuse() {
  local dir=$1
  grep -qF " $dir fuse.glusterfs " /proc/self/mounts 2>/dev/null || grep -q " $dir " /proc/self/mounts || return 0
  timeout -s KILL 5 umount "$dir" 2>/dev/null || timeout -s KILL 5 umount -f "$dir" 2>/dev/null || umount -l "$dir" || true
}

cmd_stop() {
  local state=$1 pid f d
  [[ -d $state ]] || { echo "start-glusterd: no state directory $state" >&2; exit 1; }
  state=$(cd "$state" && pwd)
  # 1. FUSE mounts recorded by `mount`, and any glusterfs mount placed under the state directory.
  if [[ -f $state/mounts ]]; then
    while read -r d; do [[ -n $d ]] && unmount_fuse "$d"; done <"$state/mounts"
  fi
  awk -v s="$state/" '$3 == "fuse.glusterfs" && index($2, s) == 1 {print $2}' /proc/self/mounts | while read -r d; do unmount_fuse "$d"; done
  # 2. Volumes, while glusterd still answers (so brick processes are stopped cleanly).
  if [[ -S $state/glusterd.sock ]] && [[ -f $state/glusterd.pid ]] && alive "$(cat "$state/glusterd.pid")"; then
    local cli=(timeout 20 gluster --mode=script --glusterd-sock="$state/glusterd.sock" --log-file="$state/logs/cli.log")
    for v in $("${cli[@]}" volume list 2>/dev/null | grep -v '^No volumes' || true); do
      "${cli[@]}" volume stop "$v" force >/dev/null 2>&1 || true
    done
  fi
  # 3. glusterd, then what it started (bricks, self-heal daemons): their pid files are under our run dir.
  if [[ -f $state/glusterd.pid ]]; then
    kill_own "$(cat "$state/glusterd.pid")" 5 "$state/glusterd.vol"
  fi
  if [[ -d $state/run ]]; then
    while read -r f; do
      pid=$(cat "$f" 2>/dev/null || true)
      [[ $pid =~ ^[0-9]+$ ]] && kill_own "$pid" 3 "$state/run/"
    done < <(find "$state/run" -name '*.pid')
  fi
  rm -f "$state/glusterd.pid"
  # 4. Files glusterd and its children created in the system directories during this run.
  if [[ -f $state/system-before ]]; then
    for d in "${SYSTEM_DIRS[@]}"; do
      find "$d" -mindepth 1 -depth 2>/dev/null | while read -r f; do
        grep -qxF -- "$f" "$state/system-before" || rm -rf -- "$f"
      done
    done
  fi
  echo "glusterd stopped (state kept in $state)"
}

[[ $# -ge 2 ]] || usage
case $1 in
  start) cmd_start "$2" ;;
  mount) [[ $# -eq 4 ]] || usage; cmd_mount "$2" "$3" "$4" ;;
  stop) cmd_stop "$2" ;;
  *) usage ;;
esac
