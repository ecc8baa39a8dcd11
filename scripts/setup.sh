#!/usr/bin/env bash
# Installs everything Stowage needs on a Debian 12 machine (run as root):
# the host tools the node agent and the tests drive, then the Python package.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  e2fsprogs xfsprogs btrfs-progs util-linux mount kmod   # mkfs, losetup, blkid, mount
  git                                                    # gitRepo volumes (clone on the node)
  runc                                                     # pod containers
  fio                                                      # benchmarks
  postgresql                                               # the multi-host store, and its tests
  etcd-server etcd-client                                  # the clustered-database example
  iproute2 procps psmisc curl ca-certificates
  qemu-utils                                               # qemu-img: an independent check of Azure disks' VHD footers
  nfs-ganesha nfs-ganesha-vfs libnfs-utils                 # a userspace NFS server (brings rpcbind) and libnfs, the userspace client
  libnfs-dev                                               # libnfs.h: the tests check the ctypes binding against it
  kubernetes-client                                        # kubectl 1.20, the older kubectl the tests drive
  tgt libiscsi-bin qemu-block-extra                        # iSCSI target (tgtd) and userspace initiator tools
  python3-rados python3-rbd python3-cephfs ceph-common ceph-mon ceph-mgr ceph-osd ceph-mds ceph-fuse rbd-fuse  # Ceph RBD and CephFS
  glusterfs-server glusterfs-client                        # glusterd + gluster CLI; mount.glusterfs FUSE client
)

missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # postgresql's package starts the machine's default cluster; the project never
  # uses it (tests run a private throw-away server), so ask invoke-rc.d not to.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; created_policy=1; fi
  # Debian's kubectl ships /usr/bin/kubectl; when another package (a cloud SDK's kubectl) already
  # owns that path, dpkg would refuse the install. A diversion sends kubernetes-client's copy to a
  # name beside it and leaves the other package's file alone; the tests find the binary through
  # dpkg, not PATH. (`--package OWNER` exempts the owner: every other package's copy is diverted.)
  if [[ " ${missing[*]} " == *" kubernetes-client "* ]]; then
    owner=$(dpkg-query -S /usr/bin/kubectl 2>/dev/null | cut -d: -f1 || true)
    if [[ -n $owner && $owner != *,* && $owner != kubernetes-client ]] \
       && ! dpkg-divert --list /usr/bin/kubectl | grep -q .; then
      dpkg-divert --quiet --package "$owner" --divert /usr/bin/kubectl.kubernetes-client --no-rename \
        --add /usr/bin/kubectl
    fi
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ((created_policy)) && rm -f "$policy"
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: Python 3.11 or newer is required (found $("$PYTHON" --version))" >&2
  exit 1
fi
extras=${STOWAGE_EXTRAS:-dev,aws,gcp,azure,ceph,csi,backup,bench,profile}
echo "setup: installing the stowage Python package [$extras]"
"$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore -e ".[${extras}]"
# Azurite (Azure Blob's emulator, for the Azure disk tests) comes from npm, into the project's own
# .cache/node so nothing global changes; the tests look for it there.
AZURITE_VERSION=3.37.0
if [[ $extras == *dev* ]] && command -v npm >/dev/null \
   && ! [[ -x .cache/node/node_modules/.bin/azurite-blob ]]; then
  echo "setup: installing azurite $AZURITE_VERSION (npm)"
  npm install --silent --no-audit --no-fund --prefix .cache/node "azurite@$AZURITE_VERSION" >/dev/null
fi
# CSI: a real third-party CSI driver for the tests (kubernetes-csi's mock driver from csi-test v3.1.1),
# built with Go into .cache/go/bin when `go` is there. (The Kubernetes hostpath driver would be the
# better test driver, but the Go module proxy refuses github.com/kubernetes-csi/csi-driver-host-path.)
# `go install pkg@version` also fails for it (the proxy refuses csi-test/v3's version list, which
# install reads for deprecations), so it is built from a throw-away module that requires it.
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
if [[ $extras == *dev* && -x $GO && ! -x .cache/go/bin/mock-driver ]]; then
  echo "setup: building the CSI mock driver (Go)"
  mkdir -p .cache/go/bin
  gotmp=$(mktemp -d)
  (cd "$gotmp" && "$GO" mod init csimock >/dev/null 2>&1 \
     && "$GO" mod edit -require=github.com/kubernetes-csi/csi-test/v3@v3.1.1 \
     && printf 'package main\nimport _ "github.com/kubernetes-csi/csi-test/v3/mock/service"\nfunc main() {}\n' >x.go \
     && GOFLAGS=-mod=mod "$GO" build -o "$OLDPWD/.cache/go/bin/mock-driver" github.com/kubernetes-csi/csi-test/v3/cmd/mock-driver) \
    || echo "setup: could not build the CSI mock driver; the CSI driver tests will be skipped" >&2
  rm -rf "$gotmp"
fi
# The external-snapshotter's CustomResourceDefinitions, as a cluster installs them before any CSI snapshot
# (client/config/crd of github.com/kubernetes-csi/external-snapshotter/client/v8), from the Go module proxy
# into .cache/crds: the CRD tests apply them unchanged with kubectl.
SNAPSHOTTER_VERSION=v8.7.0
SNAPSHOTTER_CRDS=.cache/crds/external-snapshotter-$SNAPSHOTTER_VERSION
if [[ $extras == *dev* && -x $GO && ! -f $SNAPSHOTTER_CRDS/kustomization.yaml ]]; then
  echo "setup: fetching the external-snapshotter $SNAPSHOTTER_VERSION CRDs (Go module proxy)"
  snapdir=$("$GO" mod download -json "github.com/kubernetes-csi/external-snapshotter/client/v8@$SNAPSHOTTER_VERSION" \
            | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin).get("Dir", ""))') || snapdir=""
  if [[ -n $snapdir && -d $snapdir/config/crd ]]; then
    mkdir -p "$SNAPSHOTTER_CRDS.tmp" && cp "$snapdir"/config/crd/*.yaml "$SNAPSHOTTER_CRDS.tmp/" \
      && chmod -R u+w "$SNAPSHOTTER_CRDS.tmp" && rm -rf "$SNAPSHOTTER_CRDS" && mv "$SNAPSHOTTER_CRDS.tmp" "$SNAPSHOTTER_CRDS"
  else
    echo "setup: could not fetch the external-snapshotter CRDs; their test will be skipped" >&2
  fi
fi
# Apache Cassandra for examples/cassandra (the real ring of tests/e2e/test_cassandra_real.py): the
# server jar org.apache.cassandra:cassandra-all and its runtime dependencies from Maven Central,
# through Maven (scripts/cassandra/pom.xml), into /opt/stowage/cassandra/lib: a fixed place, as a
# package would install it, so the example's pods find it without being told where this checkout is.
# Cassandra 5.0 because it runs on Java 17 (4.1 needs Java 11). Without Maven or Java the example
# runs its stand-in.
CASSANDRA_VERSION=5.0.8
CASSANDRA_LIB_DIR=/opt/stowage/cassandra/lib
if command -v mvn >/dev/null && command -v java >/dev/null \
   && ! [[ -f $CASSANDRA_LIB_DIR/cassandra-all-$CASSANDRA_VERSION.jar ]]; then
  echo "setup: installing Apache Cassandra $CASSANDRA_VERSION (Maven Central)"
  mkdir -p "$(dirname "$CASSANDRA_LIB_DIR")"
  rm -rf "$CASSANDRA_LIB_DIR.tmp"
  if (cd scripts/cassandra && mvn -q -B dependency:copy-dependencies -Dcassandra.version="$CASSANDRA_VERSION" \
        -DincludeScope=runtime -DoutputDirectory="$CASSANDRA_LIB_DIR.tmp"); then
    # Swapped in whole, so an interrupted download never looks installed.
    chmod -R a+rX "$CASSANDRA_LIB_DIR.tmp"
    rm -rf "$CASSANDRA_LIB_DIR" && mv "$CASSANDRA_LIB_DIR.tmp" "$CASSANDRA_LIB_DIR"
  else
    rm -rf "$CASSANDRA_LIB_DIR.tmp"
    echo "setup: could not install Apache Cassandra; examples/cassandra will run its stand-in" >&2
  fi
fi
echo "setup: done ($(command -v stowage))"
