#!/usr/bin/env bash
# Builds the root filesystem MySQL runs from here: Debian's sid suite is the only one
# that ships a MySQL server (mysql-server-core 9.7, the LTS), debootstrapped from the
# machine's own Debian mirror, with the mysql user at uid/gid 999 as in the official
# image. Package tests run its mysqld through its own dynamic loader (test/mariadb);
# the local cluster's MySQL image is made from it. Test infrastructure: no image can be
# pulled on the development machines.
#
#   test/cluster/mysql-rootfs.sh DEST_DIR
set -euo pipefail

dest=${1:?destination directory}
[ -x "$dest/usr/sbin/mysqld" ] && exit 0

mirror=$("$(dirname "$0")/debian-mirror.sh")

work="$dest.tmp"
rm -rf "$work"
trap 'rm -rf "$work" "$work.log"' EXIT
echo "mysql-rootfs: debootstrap sid from $mirror (~9 min)"
debootstrap --variant=minbase --include=mysql-server-core,mysql-client-core,ca-certificates \
  sid "$work" "$mirror" >"$work.log" 2>&1 || { tail -20 "$work.log"; exit 1; }

# uid/gid 999 as the official image (the package made no user: -core has no scripts).
chroot "$work" groupadd --system --gid 999 mysql
chroot "$work" useradd --system --uid 999 --gid 999 --home-dir /var/lib/mysql --no-create-home --shell /usr/sbin/nologin mysql
rm -rf "$work/var/lib/mysql" && mkdir -p "$work/var/lib/mysql" "$work/var/lib/mysql-files" "$work/run/mysqld"
chown 999:999 "$work/var/lib/mysql" "$work/var/lib/mysql-files" "$work/run/mysqld"

# Smaller: no docs, manuals, locales or apt lists.
rm -rf "$work"/usr/share/{doc,man,info,locale} "$work"/var/lib/apt/lists/* "$work"/var/cache/apt/*.bin

rm -rf "$dest" && mv "$work" "$dest"
echo "mysql-rootfs: ready ($(du -sh "$dest" | cut -f1), $("$dest"/usr/sbin/mysqld --version 2>/dev/null || chroot "$dest" mysqld --version))"
