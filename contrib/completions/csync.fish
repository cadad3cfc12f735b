complete -c csync -s k -d 'Create a new group key FILE (mode 0600, refuses to overwrite)' -r -F
complete -c csync -l explain -d 'Say which group and which pattern decide whether PATH is managed' -r -F
complete -c csync -l ack-failed -d 'Forget the failed actions --status lists, once dealt with by hand: all of them, or only those that ran on HOST (a peer, or this node\'s name). They are also forgotten when the same command succeeds later' -r
complete -c csync -l ping -d 'Connect to PEER over mutual TLS, prove the shared group keys, and report the protocol version, verified identity, round trip and clock offset' -r
complete -c csync -l new-ca -d 'Create a cluster CA in DIR (csync2_ssl_ca.pem and csync2_ssl_ca.key, 0600)' -r -F
complete -c csync -l new-cert -d 'Create a certificate and key for host NAME, signed by the CA in --ca, into --out' -r
complete -c csync -l ca -d 'The CA directory for --new-cert' -r -F
complete -c csync -l out -d 'The output directory for --new-cert (csync2_ssl_cert.pem, csync2_ssl_key.pem, CA copy)' -r -F
complete -c csync -l timeout -d 'Connect timeout in seconds: resolving, TCP, TLS and the handshake together (a dead peer costs at most this)' -r
complete -c csync -l idle-timeout -d 'Idle timeout in seconds for every later read and write' -r
complete -c csync -l session-timeout -d 'Listener (-i, -ii): longest a peer\'s session may last, in seconds, however it stalls (14400: 4 hours)' -r
complete -c csync -l watch-delay -d 'Watch mode: quiet time in ms that ends a burst (capped at 10x, >= 1 s)' -r
complete -c csync -l full-check-every -d 'Watch mode: a full check runs this often anyway, in seconds' -r
complete -c csync -s N -d 'This node\'s name (default: the host name, lower-cased)' -r
complete -c csync -s C -d 'Config name: use <sysdir>/csync2_NAME.cfg and index <node>_NAME.db' -r
complete -c csync -s D -d 'Index location: a directory, or a file ending in .db' -r
complete -c csync -s p -d 'TCP port (default 30865)' -r
complete -c csync -s P -d 'Only these peers (comma-separated)' -r
complete -c csync -s G -d 'Only these groups (comma-separated)' -r
complete -c csync -l config -d 'Use this config file (overrides -C and the system dir)' -r -F
complete -c csync -s s -d 'csync2\'s `-s FILE` (timestamps into FILE): nothing to do' -r -F
complete -c csync -s W -d 'csync2\'s `-W FD`: after a check, the checked directories, NUL-terminated, to FD' -r
complete -c csync -l import-csync2 -d 'Import a csync2 2.0 database (default /var/lib/csync2/<node>[_NAME].db3, only read): its agreed and dirty state becomes this index\'s' -r -F
complete -c csync -l days -d 'Validity in days of what --new-ca / --new-cert create' -r
complete -c csync -l completions -d 'Print a completion script for SHELL and exit (used by packaging)' -r -f -a "bash\t''
elvish\t''
fish\t''
powershell\t''
zsh\t''"
complete -c csync -s x -d 'Check, then update: find local changes and push everything dirty to every peer'
complete -c csync -s c -d 'Check only: update the index and the dirty marks (no network)'
complete -c csync -s u -d 'Update only: push what is dirty (-cu = check, then update)'
complete -c csync -s m -d 'Mark PATHs dirty for every peer'
complete -c csync -s f -d 'Force: this node\'s version of PATHs wins the next push, even over a conflict'
complete -c csync -s M -d 'List dirty entries: force|chary, this node, peer, path (tab-separated)'
complete -c csync -s L -d 'List the index: state and path (tab-separated)'
complete -c csync -s T -d 'In-sync test against peers (-TT: with unified diffs; -TI: mark what differs)'
complete -c csync -s R -d 'Remove index rows that no longer match the config'
complete -c csync -s i -d 'Serve one connection on stdin/stdout (-ii: standalone listener daemon)'
complete -c csync -l check-config -d 'Parse and resolve the config, print a summary, check this node\'s identity and key files, and exit (1 when a run would fail; warnings otherwise)'
complete -c csync -l status -d 'Show what is pending per peer, every conflict met with where the losing version was kept, and every action that failed (here or on a peer this node pushed to) and has not worked since'
complete -c csync -l ack-conflicts -d 'Acknowledge the conflicts recorded on the given paths (all without paths): `--status` no longer lists them as open. The kept copies stay'
complete -c csync -l watch -d 'Watch mode: inotify on the include roots; each burst of changes is checked and pushed to every peer at once (with -ii: also serve peers)'
complete -c csync -s r -d 'Recurse into directories given as PATHs'
complete -c csync -s I -d 'Init run: record the current state without marking anything dirty'
complete -c csync -s d -d 'Dry run: say what would be sent, change nothing anywhere'
complete -c csync -s v -d 'More detail (-v, -vv, -vvv); silent on success by default'
complete -c csync -l json -d 'Output one JSON document on stdout (listings, -x/-u/-c and -T reports, --status, --ping, --check-config, --explain, --import-csync2); see doc/json-schema.md'
complete -c csync -s l -d 'Accepted for csync2 compatibility (-l: log to syslog); csync logs to stderr'
complete -c csync -l help -d 'Print help'
complete -c csync -s h -d 'csync2\'s `-h` (add hints; alone: print help). See the letters below'
complete -c csync -s H -d 'csync2\'s `-H` (list hints): there are none'
complete -c csync -s S -d 'csync2\'s `-S NAME PEER`: index entries relevant to that pair'
complete -c csync -s o -d 'csync2\'s `-o`: the managed paths below the given PATHs'
complete -c csync -s B -d 'csync2\'s `-B` (no big transactions): nothing to do'
complete -c csync -s A -d 'csync2\'s `-A` (sqlite synchronous=OFF): nothing to do'
complete -c csync -s t -d 'csync2\'s `-t` (timestamps in the debug output): nothing to do'
complete -c csync -s X -d 'csync2\'s `-X` (with -TI: mark remote-only entries for deletion)'
complete -c csync -s U -d 'csync2\'s `-U` (with -TI: mark only towards the tested peer)'
complete -c csync -s F -d 'csync2\'s `-F` (new dirty marks are forced)'
complete -c csync -l man -d 'Print the man page (roff) and exit: `csync --man > csync.1`'
complete -c csync -l prometheus -d '`--status` as Prometheus text (node_exporter\'s textfile collector); exits 0 whenever the metrics were written'
complete -c csync -s V -l version -d 'Print version'
