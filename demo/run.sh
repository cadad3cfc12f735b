#!/usr/bin/env bash
# The README's first command: builds csync and runs a 3-node cluster on
# loopback, no root needed. Each node gets its own certificate (made on the
# fly), its own tree (via `prefix`), its own index and its own listener on
# 127.0.88.x. Files change on one node; `csync -x` makes every node agree.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building csync (release)"
cargo build --release --quiet
csync="$PWD/target/release/csync"

work=$(mktemp -d "${TMPDIR:-/tmp}/csync-demo.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
nodes=(n1 n2 n3)

echo "== identities: one cluster CA, one certificate per node (csync --new-ca / --new-cert)"
"$csync" --new-ca "$work/ca" >/dev/null
"$csync" -k "$work/key"
for i in 1 2 3; do
    n=n$i
    mkdir -p "$work/$n/etc" "$work/$n/root"
    "$csync" --new-cert "$n" --ca "$work/ca" --out "$work/$n/etc" >/dev/null
    cp "$work/key" "$work/$n/etc/csync2.key_demo"
    cat > "$work/$n/etc/csync2.cfg" <<CFG
# The same csync2-syntax config on every node.
group demo {
    host n1@127.0.88.1 n2@127.0.88.2 n3@127.0.88.3;
    key csync2.key_demo;
    include %www%;
    exclude *~ %www%/cache;
    auto younger;
    # Stands in for "nginx -t && nginx -s reload": runs once per run on every
    # node whose conf/ changed (do-local: also where the change was made),
    # with the changed paths as arguments.
    action {
        pattern %www%/conf;
        exec "echo 'reloaded for:' %%";
        logfile "$work/$n/reload.log";
        timeout 10;
        do-local;
    }
}
prefix www { on n1: $work/n1/root; on n2: $work/n2/root; on n3: $work/n3/root; }
CFG
done

node() { local n=$1; shift; CSYNC2_SYSTEM_DIR="$work/$n/etc" "$csync" -N "$n" -D "$work/$n/db" -p "$port" "$@"; }
run() { local n=$1; shift; echo "[$n]\$ csync $*"; node "$n" "$@" || { rc=$?; [ $rc -eq 2 ] || echo "(exit $rc)"; }; }
tree() { (cd "$work/$1/root" && find . -mindepth 1 | sort | while read -r f; do
    if [ -f "$f" ]; then printf '  %-28s %s\n' "$f" "$(head -c 40 "$f" | tr '\n' ' ')"; else printf '  %s/\n' "$f"; fi
done); }

echo "== starting a listener on each node (csync -ii)"
for n in "${nodes[@]}"; do
    # exec: $! must be csync itself, so the cleanup stops the daemon, not a subshell.
    (CSYNC2_SYSTEM_DIR="$work/$n/etc" exec "$csync" -N "$n" -D "$work/$n/db" -p "$port" -ii \
        >/dev/null 2> "$work/$n/daemon.log") &
    pids+=($!)
done
for i in 1 2 3; do
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.88.$i/$port") 2>/dev/null && break
        sleep 0.05
    done
done
run n1 --ping n2

echo; echo "== n1 gets some content"
mkdir -p "$work/n1/root/conf" "$work/n1/root/htdocs" "$work/n1/root/cache"
echo "server { listen 80; }" > "$work/n1/root/conf/site.conf"
echo "<h1>hello from n1</h1>" > "$work/n1/root/htdocs/index.html"
ln -s htdocs/index.html "$work/n1/root/home"
echo "scratch, not synced" > "$work/n1/root/cache/tmp"
echo "editor backup, not synced" > "$work/n1/root/conf/site.conf~"
run n1 -x
for n in n2 n3; do echo "$n now has:"; tree "$n"; done
echo "the action ran once on each node, after its files were in place:"
for n in "${nodes[@]}"; do printf '  %s reload.log: %s\n' "$n" "$(tail -1 "$work/$n/reload.log")"; done

echo; echo "== a change on n2, a delete on n3; each runs csync -x"
echo "<h1>edited on n2</h1>" > "$work/n2/root/htdocs/index.html"
run n2 -x
rm "$work/n3/root/home"
run n3 -x
for n in "${nodes[@]}"; do echo "$n:"; tree "$n"; done

echo; echo "== a conflict: n1 and n3 both edit site.conf; auto younger picks n3's newer edit"
echo "server { listen 8081; } # n1" > "$work/n1/root/conf/site.conf"
touch -d '-1 minute' "$work/n1/root/conf/site.conf"
echo "server { listen 8443; } # n3" > "$work/n3/root/conf/site.conf"
run n1 -x
run n3 -x
for n in "${nodes[@]}"; do printf '%s: %s\n' "$n" "$(cat "$work/$n/root/conf/site.conf")"; done
for n in "${nodes[@]}"; do printf '%s reloaded %s times\n' "$n" "$(wc -l < "$work/$n/reload.log")"; done
echo "n1 kept its losing version: $(find "$work/n1/db" -name 'site.conf.conflict-*' -exec cat {} \;)"

echo; echo "== in-sync test (csync -T): no output and exit 2 means identical"
run n1 -T
if diff -r "$work/n1/root" "$work/n2/root" -x cache -x '*~' >/dev/null && diff -r "$work/n1/root" "$work/n3/root" -x cache -x '*~' >/dev/null; then
    echo "all three trees are identical (diff -r)"
else
    echo "trees differ!"; exit 1
fi
