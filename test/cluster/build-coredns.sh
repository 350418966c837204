#!/usr/bin/env bash
# Builds CoreDNS from its Go module with only the plugins a cluster DNS needs
# (kubernetes, cache, health, ready, errors, log, loadbalance), the same way CoreDNS
# documents custom builds: a main package that sets dnsserver.Directives and imports
# the plugins. Leaving out the cloud plugins (route53, azure, clouddns, …) makes the
# cold build a fraction of `go install github.com/coredns/coredns`.
#
#   test/cluster/build-coredns.sh VERSION DEST_BINARY
set -euo pipefail

version=${1:?coredns version, e.g. v1.11.3}
dest=${2:?destination binary}
[ -x "$dest" ] && exit 0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init replicant.local/coredns >/dev/null 2>&1
cat > main.go <<'GO'
// Command coredns is CoreDNS with the plugins a Kubernetes cluster DNS uses.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The order in which plugins see a query: CoreDNS's plugin.cfg order.
func init() {
	dnsserver.Directives = []string{"ready", "health", "errors", "log", "loadbalance", "cache", "kubernetes"}
}

func main() { coremain.Run() }
GO
echo "coredns: resolving modules ($version)"
go get "github.com/coredns/coredns@$version" >/dev/null 2>&1 || go get "github.com/coredns/coredns@$version"
go mod tidy >/dev/null 2>&1 || go mod tidy
echo "coredns: building (cold: ~2 min)"
start=$(date +%s)
( while sleep 30; do echo "coredns: still building, $(( $(date +%s) - start ))s so far"; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$(dirname "$dest")"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$version" -o "$dest.tmp" .
mv "$dest.tmp" "$dest"
echo "coredns: built in $(( $(date +%s) - start ))s: $dest"
