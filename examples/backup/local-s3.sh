#!/usr/bin/env bash
# A local S3 endpoint to try backups on one machine: moto's server on 127.0.0.1 (port $PORT, default 9000)
# with the bucket `stowage-backups`. A real S3 bucket (or GCS, Azure Blob) works the same way; see
# s3-class.yaml for the parameters.
#   examples/backup/local-s3.sh start DIR     # pid and log in DIR
#   examples/backup/local-s3.sh stop DIR
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?a directory for the pid and log}
port=${PORT:-9000}
mkdir -p "$dir"
case $cmd in
  start)
    moto_server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    for _ in $(seq 100); do
      python3 - "$port" <<'PY' && exit 0 || sleep 0.1
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
if "stowage-backups" not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
    s3.create_bucket(Bucket="stowage-backups")
print(f"s3 endpoint http://127.0.0.1:{sys.argv[1]} bucket stowage-backups")
PY
    done
    echo "moto did not start; see $dir/moto.log" >&2; exit 1 ;;
  stop)
    [[ -f $dir/moto.pid ]] && kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
    rm -f "$dir/moto.pid" ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
