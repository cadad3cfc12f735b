#!/usr/bin/env bash
# The README's first command: builds csync and runs it on a ready example, with
# no root needed. Two nodes (n1, n2) share one config; each has its own root
# tree (via `prefix`) and its own index, all under one temporary directory.
#
# What it shows today: n1 indexes its tree, detects a content change, an
# mtime-only touch and a delete, exactly, and queues them for its peer.
# (Pushing to peers over mutual TLS arrives with the transport and sync issues.)
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building csync (release)"
cargo build --release --quiet
csync="$PWD/target/release/csync"

work=$(mktemp -d "${TMPDIR:-/tmp}/csync-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
export CSYNC2_SYSTEM_DIR="$work/etc"
mkdir -p "$CSYNC2_SYSTEM_DIR" "$work/n1" "$work/n2"
"$csync" -k "$CSYNC2_SYSTEM_DIR/csync2.key_demo"

cat > "$CSYNC2_SYSTEM_DIR/csync2.cfg" <<CFG
# Two nodes on one machine: each maps %www% to its own directory.
group demo {
    host n1 n2;
    key csync2.key_demo;
    include %www%;
    exclude *~ %www%/cache;
    action { pattern %www%/conf/*; exec "echo reload %%"; do-local; }
}
prefix www { on n1: $work/n1; on n2: $work/n2; }
CFG

run() { echo "\$ csync $*"; "$csync" -D "$work/db" "$@" || [ $? -eq 2 ]; }

mkdir -p "$work/n1/conf" "$work/n1/htdocs" "$work/n1/cache"
echo "server { listen 80; }" > "$work/n1/conf/site.conf"
echo "<h1>hello</h1>" > "$work/n1/htdocs/index.html"
echo "scratch" > "$work/n1/cache/tmp"
echo "backup" > "$work/n1/htdocs/index.html~"
echo "listen 81;" > "$work/n1/conf/old.conf"

echo; echo "== the config, as node n1 resolves it"
run -N n1 --check-config
echo; echo "== n1 records its tree without queuing anything (-cIr, the first run on an existing cluster)"
run -N n1 -cIr
run -N n1 -L
run -N n1 -M
echo; echo "== edit one file, touch another, delete a third; -c finds exactly these (cache/ and *~ stay out)"
echo "server { listen 8080; }" > "$work/n1/conf/site.conf"
touch -d '+1 hour' "$work/n1/htdocs/index.html"
echo "tmp" > "$work/n1/cache/tmp2"
rm "$work/n1/conf/old.conf"
run -N n1 -cv
run -N n1 -M
echo; echo "== n2 starts with its own files: its first -cr queues everything for n1"
mkdir -p "$work/n2/htdocs"
echo "<h1>from n2</h1>" > "$work/n2/htdocs/about.html"
run -N n2 -cr
run -N n2 -M --json
echo; echo "== which rule decides a path (--explain)"
run -N n1 --explain "$work/n1/cache/tmp"
echo; echo "demo finished; everything was under $work (now removed)"
