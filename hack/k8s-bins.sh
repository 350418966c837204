#!/usr/bin/env bash
# Builds the Kubernetes binaries the tests need from the k8s.io/kubernetes module (no
# downloads besides the Go module proxy) into a cache outside the clone, and links
# Debian's etcd beside them. Skips everything that is already there.
#
#   hack/k8s-bins.sh VERSION CACHE_DIR [component ...]
#
# k8s.io/kubernetes cannot be required as a plain module: its go.mod replaces every
# k8s.io/<staging repo> with ./staging/..., so a throw-away module requires it and
# replaces each staging repo with its published v0.Y.Z tag instead.
set -euo pipefail

version=${1:?kubernetes version, e.g. v1.34.4}
dest=${2:?destination directory}
shift 2
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(kube-apiserver kube-controller-manager kubectl)

missing=()
for c in "${components[@]}"; do
  [ -x "$dest/$c" ] || missing+=("$c")
done

mkdir -p "$dest"
if [ ! -e "$dest/etcd" ]; then
  etcd_bin=$(command -v etcd || true)
  [ -n "$etcd_bin" ] || { echo "etcd not found: run 'make deps' (Debian etcd-server)" >&2; exit 1; }
  ln -sf "$etcd_bin" "$dest/etcd"
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

minor=${version#v1.}; minor=${minor%%.*}
staging_version="v0.${version#v1.}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$work"
go mod init replicant.local/k8s-bins >/dev/null 2>&1
gomod=$(go mod download -json "k8s.io/kubernetes@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
[ -f "$gomod" ] || { echo "could not download k8s.io/kubernetes@$version" >&2; exit 1; }

go mod edit -require="k8s.io/kubernetes@$version"
# Every "k8s.io/x => ./staging/src/k8s.io/x" line becomes a replace to the published tag.
for repo in $(sed -n 's|^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*|\1|p' "$gomod"); do
  go mod edit -replace="$repo=$repo@$staging_version"
done
cat > tools.go <<GO
//go:build tools

package tools
GO

pkgs=()
for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
pinned=(); for p in "${pkgs[@]}"; do pinned+=("$p@$version"); done
echo "k8s-bins: resolving modules for ${missing[*]} ($version)"
# go get fills go.sum and the indirect requirements for the packages we build.
# Pinned: a bare "go get" of a package would move k8s.io/kubernetes to its newest release.
go get "${pinned[@]}" >/dev/null 2>&1 || go get "${pinned[@]}"

ldflags=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

echo "k8s-bins: building ${missing[*]} (cold: ~8 min for the first, 1-2 min each after)"
start=$(date +%s)
( while sleep 30; do echo "k8s-bins: still building, $(( $(date +%s) - start ))s so far"; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null; rm -rf "$work"' EXIT
out="$work/out"
mkdir -p "$out"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$out/" "${pkgs[@]}"
for c in "${missing[@]}"; do mv "$out/$c" "$dest/$c"; done
echo "k8s-bins: built ${missing[*]} in $(( $(date +%s) - start ))s into $dest"
