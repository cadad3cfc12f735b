#!/bin/sh
# Builds the Debian package of csync with dpkg-deb alone, for machines without
# cargo-deb. It ships the same files as Cargo.toml's [package.metadata.deb]
# (which `cargo deb` uses); a test keeps the two lists in step.
#
#   contrib/deb/build.sh                 # cargo build --release, then target/debian/csync_<version>_<arch>.deb
#   contrib/deb/build.sh --binary PATH   # package this binary instead (the tests use the debug one)
#   contrib/deb/build.sh --out DIR       # write the .deb into DIR
#   contrib/deb/build.sh --uncompressed  # skip xz (seconds instead of tens: the tests)
#
# Prints the path of the package it wrote.
set -eu
cd "$(dirname "$0")/../.."

binary=""
out="target/debian"
compress=-Zxz
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) binary="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --uncompressed) compress=-Znone; shift ;;
        *) echo "usage: $0 [--binary PATH] [--out DIR] [--uncompressed]" >&2; exit 2 ;;
    esac
done
if [ -z "$binary" ]; then
    cargo build --release --locked >&2
    binary=target/release/csync
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
mkdir -p "$out"
stage=$(mktemp -d "${TMPDIR:-/tmp}/csync-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/root"

# install MODE SRC DEST: one file into the package tree.
put() {
    install -D -m "$1" "$2" "$root/$3"
}

put 0755 "$binary" usr/bin/csync
# The debug binary of the tests is 100 MB; stripped, it packs in a second.
strip --strip-debug "$root/usr/bin/csync" 2>/dev/null || true
for u in contrib/systemd/*.service contrib/systemd/*.socket contrib/systemd/*.timer; do
    put 0644 "$u" "lib/systemd/system/$(basename "$u")"
done
put 0644 contrib/cron.d/csync etc/cron.d/csync
put 0644 contrib/completions/csync.bash usr/share/bash-completion/completions/csync
put 0644 contrib/completions/_csync usr/share/zsh/vendor-completions/_csync
put 0644 contrib/completions/csync.fish usr/share/fish/vendor_completions.d/csync.fish
put 0644 doc/csync.1 usr/share/man/man1/csync.1
put 0644 doc/csync.cfg.5 usr/share/man/man5/csync.cfg.5
gzip -9n "$root/usr/share/man/man1/csync.1" "$root/usr/share/man/man5/csync.cfg.5"
put 0644 README.md usr/share/doc/csync/README.md
put 0644 SECURITY.md usr/share/doc/csync/SECURITY.md
put 0644 doc/json-schema.md usr/share/doc/csync/json-schema.md
put 0644 csync2.cfg.example usr/share/doc/csync/examples/csync2.cfg.example
put 0644 csync2.cfg.example.d/extra.cfg usr/share/doc/csync/examples/csync2.cfg.example.d/extra.cfg
put 0644 contrib/deb/copyright usr/share/doc/csync/copyright

# The C library the binary needs: the newest GLIBC_x.y symbol version it uses.
glibc=$(objdump -T "$root/usr/bin/csync" 2>/dev/null | sed -n 's/.*GLIBC_\([0-9.]*\).*/\1/p' | sort -t. -k1,1n -k2,2n | tail -n 1)
depends="libgcc-s1"
if [ -n "$glibc" ]; then depends="libc6 (>= $glibc), $depends"; else depends="libc6, $depends"; fi

mkdir -p "$root/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" -e "s/@SIZE@/$size/" \
    contrib/deb/control.in > "$root/DEBIAN/control"
echo /etc/cron.d/csync > "$root/DEBIAN/conffiles"
install -m 0755 contrib/deb/postinst "$root/DEBIAN/postinst"
install -m 0755 contrib/deb/postrm "$root/DEBIAN/postrm"

deb="$out/csync_${version}_${arch}.deb"
dpkg-deb --root-owner-group "$compress" --build "$root" "$deb" >&2
echo "$deb"
