#!/usr/bin/env bash
# Builds the root filesystem of a MariaDB image the local cluster runs: a Debian suite
# (bookworm: MariaDB 10.11; trixie: 11.8, the upgrade the e2e suite rolls to;
# debootstrap from the machine's own Debian mirror) with mariadb-server and
# mariadb-backup, the mysql user at uid/gid 999 as in the official image, and an
# entrypoint that behaves like the official one for what replicant relies on.
# Test infrastructure: no image can be pulled on the development machines.
#
#   test/cluster/mariadb-rootfs.sh DEST_DIR [SUITE]   (default bookworm)
set -euo pipefail

dest=${1:?destination directory}
suite=${2:-bookworm}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$dest/usr/local/bin/docker-entrypoint.sh" ] && exit 0

mirror=$("$(dirname "$0")/debian-mirror.sh")

work="$dest.tmp"
rm -rf "$work"
trap 'umount "$work/proc" 2>/dev/null || true; rm -rf "$work"' EXIT
echo "mariadb-image: debootstrap $suite from $mirror (~2 min)"
debootstrap --variant=minbase "$suite" "$work" "$mirror" >"$work.log" 2>&1 || { tail -20 "$work.log"; exit 1; }
rm -f "$work.log"

# uid/gid 999 before the package creates the user, as the official image does.
chroot "$work" groupadd --system --gid 999 mysql
chroot "$work" useradd --system --uid 999 --gid 999 --home-dir /var/lib/mysql --no-create-home --shell /usr/sbin/nologin mysql
# No service may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$work/usr/sbin/policy-rc.d"; chmod +x "$work/usr/sbin/policy-rc.d"
mount -t proc proc "$work/proc"
echo "mariadb-image: installing mariadb-server mariadb-backup"
chroot "$work" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  mariadb-server mariadb-backup >/dev/null
umount "$work/proc"
rm -f "$work/usr/sbin/policy-rc.d"

# As the official image: listen on every address, no name resolution, empty datadir
# (the entrypoint initialises it), a socket directory the mysql user owns.
sed -i 's/^bind-address/#&/' "$work/etc/mysql/mariadb.conf.d/50-server.cnf"
printf '[mariadbd]\nskip-host-cache\nskip-name-resolve\n' >"$work/etc/mysql/conf.d/05-skipcache.cnf"
rm -rf "$work/var/lib/mysql" && mkdir -p "$work/var/lib/mysql" "$work/run/mysqld"
chown 999:999 "$work/var/lib/mysql" "$work/run/mysqld"
install -m 0755 "$here/docker-entrypoint.sh" "$work/usr/local/bin/docker-entrypoint.sh"

# Smaller image: no docs, manuals, locales or apt lists.
rm -rf "$work"/usr/share/{doc,man,info,locale} "$work"/var/lib/apt/lists/* "$work"/var/cache/apt/*.bin

rm -rf "$dest" && mv "$work" "$dest"
trap - EXIT
echo "mariadb-image: rootfs ready ($(du -sh "$dest" | cut -f1))"
