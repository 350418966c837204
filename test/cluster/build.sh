#!/usr/bin/env bash
# Builds what the local cluster runs that is not a Kubernetes binary (those come from
# hack/k8s-bins.sh): CoreDNS, cert-manager, the MariaDB root filesystems, and the image
# tarballs cluster.sh imports into containerd. Everything slow is cached in $CACHE and
# skipped when present; bin/ gets links. The debootstrap (network and disk bound) runs
# beside the Go builds (CPU bound).
#
#   test/cluster/build.sh      (the Makefile's cluster-build target sets the variables)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
CACHE=${CACHE:?cache directory}
COREDNS_VERSION=${COREDNS_VERSION:?}
CERT_MANAGER_VERSION=${CERT_MANAGER_VERSION:?}
REPLICANT_IMAGE=${REPLICANT_IMAGE:?image name the manifests use}
RCLONE_VERSION=${RCLONE_VERSION:?}
PAUSE_IMAGE=registry.k8s.io/pause:3.10

images=$root/bin/images
cm=$CACHE/cert-manager-$CERT_MANAGER_VERSION
mkdir -p "$images" "$CACHE/images"
started=$(date +%s)
log() { printf 'cluster-build [%3ds] %s\n' "$(( $(date +%s) - started ))" "$*"; }

# Two MariaDB images: 10.11 (bookworm), what the clusters run, and 11.8 (trixie), the
# major upgrade the e2e suite rolls them to. Both debootstraps run at once.
deboot_pids=()
for suite in bookworm trixie; do
  if [ ! -x "$CACHE/mariadb-rootfs-$suite/usr/local/bin/docker-entrypoint.sh" ]; then
    log "MariaDB root filesystem ($suite): debootstrap in the background"
    "$here/mariadb-rootfs.sh" "$CACHE/mariadb-rootfs-$suite" "$suite" >"$CACHE/mariadb-rootfs-$suite.log" 2>&1 &
    deboot_pids+=("$!:$suite")
  fi
done

# The two Go builds side by side: each spends part of its time resolving modules and
# linking on one core.
"$here/build-coredns.sh" "$COREDNS_VERSION" "$CACHE/coredns-$COREDNS_VERSION/coredns" &
coredns_pid=$!
"$here/build-cert-manager.sh" "$CERT_MANAGER_VERSION" "$cm" || { kill "$coredns_pid" 2>/dev/null; exit 1; }
wait "$coredns_pid"

# cert-manager's chart and CRDs from its module (the source chart's Chart.yaml is a
# template its release tool fills in; so do we).
cm_src=$(go mod download -json "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
mkdir -p "$root/bin/cert-manager"
rm -rf "$root/bin/cert-manager/chart"
cp -r "$cm_src/deploy/charts/cert-manager" "$root/bin/cert-manager/chart"
chmod -R u+w "$root/bin/cert-manager/chart"
sed -e "s/^version: .*/version: $CERT_MANAGER_VERSION/" -e "s/^appVersion: .*/appVersion: $CERT_MANAGER_VERSION/" \
  -e 's/{{IS_PRERELEASE}}/false/' "$cm_src/deploy/charts/cert-manager/Chart.template.yaml" \
  >"$root/bin/cert-manager/chart/Chart.yaml"
rm -f "$root/bin/cert-manager/chart/Chart.template.yaml" "$root/bin/cert-manager/chart/README.template.md"
ln -sfn "$cm_src/deploy/crds" "$root/bin/cert-manager/crds"

# image NAME TARBALL ENTRYPOINT_JSON USER FILE… : a one-binary image from static files
# (FILE is src:dest), cached by name.
image() {
  local name=$1 out=$2 entry=$3 user=$4; shift 4
  if [ ! -s "$out" ]; then
    local dir f
    dir=$(mktemp -d)
    mkdir -p "$dir/etc" "$dir/tmp" && chmod 1777 "$dir/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
    for f in "$@"; do install -D -m 0755 "${f%%:*}" "$dir/${f#*:}"; done
    "$here/mkimage.sh" "$name" "$out" "$dir" "$entry" "$user"
    rm -rf "$dir"
    log "image $name"
  fi
  [ "$(dirname "$out")" = "$images" ] || ln -sfn "$out" "$images/$(basename "$out")"
}

pause_bin=$CACHE/images/pause
[ -x "$pause_bin" ] || CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$pause_bin" "$root/test/cluster/pause"
image "$PAUSE_IMAGE" "$CACHE/images/pause-3.10.tar" '["/pause"]' 65535:65535 "$pause_bin:/pause"
image "registry.k8s.io/coredns/coredns:$COREDNS_VERSION" "$CACHE/images/coredns-$COREDNS_VERSION.tar" \
  '["/coredns"]' "" "$CACHE/coredns-$COREDNS_VERSION/coredns:/coredns"
for c in controller cainjector webhook; do
  image "quay.io/jetstack/cert-manager-$c:$CERT_MANAGER_VERSION" "$CACHE/images/cert-manager-$c-$CERT_MANAGER_VERSION.tar" \
    "[\"/app/cmd/$c/$c\"]" 1000:1000 "$cm/$c:/app/cmd/$c/$c"
done

# rclone (built by the Makefile's rclone target): the in-cluster S3 server backups go to.
image "docker.io/rclone/rclone:${RCLONE_VERSION#v}" "$CACHE/images/rclone-$RCLONE_VERSION.tar" \
  '["/usr/local/bin/rclone"]' 65532:65532 "$CACHE/rclone-$RCLONE_VERSION/rclone:/usr/local/bin/rclone"

# replicant: the Dockerfile's final stage (the static binary, non-root), from this
# checkout's bin/replicant — rebuilt every time, it changes with the code.
rm -f "$images/replicant.tar"
image "$REPLICANT_IMAGE" "$images/replicant.tar" '["/usr/local/bin/replicant"]' 65532:65532 \
  "$root/bin/replicant:/usr/local/bin/replicant"

for p in "${deboot_pids[@]}"; do
  log "waiting for the MariaDB root filesystem (${p#*:})"
  wait "${p%%:*}" || { cat "$CACHE/mariadb-rootfs-${p#*:}.log"; exit 1; }
done
for v in 10.11:bookworm 11.8:trixie; do
  version=${v%%:*} suite=${v#*:}
  mariadb_tar=$CACHE/images/mariadb-$version.tar
  if [ ! -s "$mariadb_tar" ]; then
    "$here/mkimage.sh" "docker.io/library/mariadb:$version" "$mariadb_tar" "$CACHE/mariadb-rootfs-$suite" \
      '["docker-entrypoint.sh"]' "" '["mariadbd"]'
    log "image docker.io/library/mariadb:$version"
  fi
  ln -sfn "$mariadb_tar" "$images/mariadb-$version.tar"
done
# MySQL 9.7: Debian sid's mysql-server-core (the Makefile's mysql-rootfs target) with the
# official image's configuration layout and an entrypoint like its own. The tarball's
# name carries a digest of both files, so a change to either makes a new image.
mysql_rootfs=$CACHE/mysql-rootfs-sid
mysql_sum=$(cat "$here/mysql-entrypoint.sh" "$here/mysql-my.cnf" | sha256sum | cut -c1-12)
mysql_tar=$CACHE/images/mysql-9.7-$mysql_sum.tar
if [ ! -s "$mysql_tar" ]; then
  [ -x "$mysql_rootfs/usr/sbin/mysqld" ] || { echo "no MySQL root filesystem: make mysql-rootfs" >&2; exit 1; }
  install -D -m 0755 "$here/mysql-entrypoint.sh" "$mysql_rootfs/usr/local/bin/docker-entrypoint.sh"
  install -D -m 0644 "$here/mysql-my.cnf" "$mysql_rootfs/etc/mysql/my.cnf"
  mkdir -p "$mysql_rootfs/etc/mysql/conf.d"
  "$here/mkimage.sh" docker.io/library/mysql:9.7 "$mysql_tar" "$mysql_rootfs" '["docker-entrypoint.sh"]' "" '["mysqld"]'
  log "image docker.io/library/mysql:9.7"
fi
ln -sfn "$mysql_tar" "$images/mysql-9.7.tar"
log "done: $(ls "$images" | wc -l) images in $images"
