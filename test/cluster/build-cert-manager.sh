#!/usr/bin/env bash
# Builds cert-manager's controller, cainjector and webhook from the root module of
# VERSION (v1.11.x still holds cmd/ there; later releases moved them to nested modules
# the proxy does not serve), keeping the one replace its go.mod carries.
#
#   test/cluster/build-cert-manager.sh VERSION DEST_DIR
set -euo pipefail

version=${1:?cert-manager version, e.g. v1.11.5}
dest=${2:?destination directory}
components=(controller cainjector webhook)
missing=()
for c in "${components[@]}"; do [ -x "$dest/$c" ] || missing+=("$c"); done
[ ${#missing[@]} -eq 0 ] && exit 0

mod=github.com/cert-manager/cert-manager
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init replicant.local/cert-manager >/dev/null 2>&1
gomod=$(go mod download -json "$mod@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
go mod edit -require="$mod@$version"
# Its replaces (module => module version) apply only in its own build: repeat them.
sed -n 's|^replace \([^ ]*\) \(v[^ ]*\) => \([^ ]*\) \(v[^ ]*\)$|\1@\2=\3@\4|p' "$gomod" | while read -r r; do
  go mod edit -replace="$r"
done
pkgs=(); for c in "${missing[@]}"; do pkgs+=("$mod/cmd/$c"); done
pinned=(); for p in "${pkgs[@]}"; do pinned+=("$p@$version"); done
echo "cert-manager: resolving modules for ${missing[*]} ($version)"
go get "${pinned[@]}" >/dev/null 2>&1 || go get "${pinned[@]}"

echo "cert-manager: building ${missing[*]} (cold: ~6 min)"
start=$(date +%s)
( while sleep 30; do echo "cert-manager: still building, $(( $(date +%s) - start ))s so far"; done ) &
ticker=$!
trap 'kill $ticker 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p out "$dest"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X $mod/pkg/util.AppVersion=$version" -o out/ "${pkgs[@]}"
for c in "${missing[@]}"; do mv "out/$c" "$dest/$c"; done
echo "cert-manager: built ${missing[*]} in $(( $(date +%s) - start ))s into $dest"
