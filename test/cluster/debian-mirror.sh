#!/usr/bin/env bash
# Prints the Debian mirror the machine's apt already uses (deb822 or one-line
# sources), else deb.debian.org: the root filesystem builds debootstrap from it.
set -euo pipefail
mirror=$(sed -n 's/^URIs: *\([^ ]*debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 || true)
[ -n "$mirror" ] || mirror=$(sed -n 's/^deb \(http[^ ]*debian\)\/* [a-z]* .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1 || true)
echo "${mirror:-http://deb.debian.org/debian}"
