#!/bin/bash
# Remakes the fuzzing seeds in this directory with the real tools (GNU tar,
# busybox, gzip, xz, zstd, skopeo): what builder/tests/it/fuzz.rs mutates
# besides the archives it builds itself. Run as root (device nodes), from
# anywhere. The tars are reproducible (names sorted, times and owners zero);
# skopeo's OCI archive keeps the layout's times.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# A small tree with one of each kind of entry.
mkdir -p tree/dir/sub tree/"ünï cödé"
printf 'hello\n' >tree/dir/file
: >tree/empty
ln -s dir/file tree/link
ln -s ../../outside tree/dir/escape
ln tree/dir/file tree/hardlink
mkfifo tree/fifo
mknod tree/null c 1 3
long=$(printf 'n%.0s' $(seq 1 120))
mkdir -p "tree/dir/$long"
printf 'long\n' >"tree/dir/$long/$long"
printf 'x\n' >"tree/ünï cödé/f"
setfattr -n user.fuzz -v yes tree/dir/file 2>/dev/null || true
mkdir sparse
printf 'data' | dd of=sparse/holes bs=1 seek=65536 conv=notrunc status=none
truncate -s 1M sparse/holes

mkdir -p "$here/tar" "$here/archive"
common=(--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -b 1)
for format in gnu oldgnu posix; do
    tar "${common[@]}" --format=$format --xattrs -cf "$here/tar/$format.tar" -C tree .
done
# ustar and v7 cannot hold the long names.
tar "${common[@]}" --format=ustar -cf "$here/tar/ustar.tar" -C tree dir/file link hardlink fifo null
tar "${common[@]}" --format=v7 -cf "$here/tar/v7.tar" -C tree dir/file link hardlink
tar "${common[@]}" --format=gnu --sparse -cf "$here/tar/sparse-gnu.tar" -C sparse holes
tar "${common[@]}" --format=posix --sparse -cf "$here/tar/sparse-posix.tar" -C sparse holes
(cd tree && busybox tar -cf "$here/tar/busybox.tar" dir/file link hardlink)
gzip -n -9 <"$here/tar/gnu.tar" >"$here/tar/gnu.tar.gz"
xz -9 <"$here/tar/gnu.tar" >"$here/tar/gnu.tar.xz"
zstd -q -19 <"$here/tar/gnu.tar" >"$here/tar/gnu.tar.zst"

# An OCI layout made by hand, copied by skopeo into its OCI and docker
# archive formats.
blob() { # file -> its digest, the file moved into the layout
    local hex
    hex=$(sha256sum "$1" | cut -d' ' -f1)
    mv "$1" "layout/blobs/sha256/$hex"
    echo "$hex"
}
mkdir -p layout/blobs/sha256
echo '{"imageLayoutVersion":"1.0.0"}' >layout/oci-layout
tar "${common[@]}" --format=gnu -cf layer.tar -C tree dir/file link
diff_id=$(sha256sum layer.tar | cut -d' ' -f1)
gzip -n <layer.tar >layer.tar.gz
layer_size=$(stat -c %s layer.tar.gz)
layer=$(blob layer.tar.gz)
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" >config.json
config_size=$(stat -c %s config.json)
config=$(blob config.json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
    "$config" "$config_size" "$layer" "$layer_size" >manifest.json
manifest_size=$(stat -c %s manifest.json)
manifest=$(blob manifest.json)
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"fuzz"}}]}' \
    "$manifest" "$manifest_size" >layout/index.json
rm -f "$here/archive/"*.tar
skopeo copy -q oci:layout:fuzz oci-archive:"$here/archive/skopeo-oci.tar":fuzz
skopeo copy -q oci:layout:fuzz docker-archive:"$here/archive/skopeo-docker.tar":localhost/fuzz:latest
ls -l "$here/tar" "$here/archive"
