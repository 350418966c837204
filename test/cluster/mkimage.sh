#!/usr/bin/env bash
# Makes a one-layer image tarball in `docker save` format from a directory, for
# `ctr images import`: no image can be pulled on the development machines.
#
#   test/cluster/mkimage.sh NAME:TAG OUT.tar ROOTFS_DIR ENTRYPOINT_JSON [USER] [CMD_JSON]
# e.g. mkimage.sh registry.k8s.io/pause:3.10 pause.tar dir '["/pause"]' 65535:65535
set -euo pipefail

name=${1:?image name}; out=${2:?output tarball}; rootfs=${3:?root directory}
entrypoint=${4:?entrypoint as a JSON array}; user=${5:-}; cmd=${6:-null}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar --numeric-owner -C "$rootfs" -cf "$work/layer.tar" .
layer_sha=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
mkdir "$work/$layer_sha" && mv "$work/layer.tar" "$work/$layer_sha/layer.tar"

cat >"$work/config.json" <<JSON
{"architecture":"amd64","os":"linux",
 "config":{"Entrypoint":$entrypoint,"Cmd":$cmd,"User":"$user",
  "Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
 "rootfs":{"type":"layers","diff_ids":["sha256:$layer_sha"]}}
JSON
config_sha=$(sha256sum "$work/config.json" | cut -d' ' -f1)
mv "$work/config.json" "$work/$config_sha.json"
printf '[{"Config":"%s.json","RepoTags":["%s"],"Layers":["%s/layer.tar"]}]\n' \
  "$config_sha" "$name" "$layer_sha" >"$work/manifest.json"
tar -C "$work" -cf "$out.tmp" manifest.json "$config_sha.json" "$layer_sha"
mv "$out.tmp" "$out"
