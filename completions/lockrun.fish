# After `--`: the command lockrun runs, completed as a command line of its own; none of
# lockrun's own completions apply there.
function __fish_lockrun_after_dashes
    contains -- -- (commandline -opc)
end
complete -c lockrun -n __fish_lockrun_after_dashes -x -a '(set -l t (commandline -opc); set -e t[1..(contains -i -- -- $t)]; complete -C (string join " " -- (string escape -- $t) (commandline -ct)))'
# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_lockrun_global_optspecs
    string join \n c/config= b/backend= p/principal= v/verbose q/quiet h/help V/version
end

function __fish_lockrun_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_lockrun_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_lockrun_using_subcommand
    set -l cmd (__fish_lockrun_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "run" -d 'Acquire a lease, run a command, renew while it runs, release when it exits'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "acquire" -d 'Acquire a lease and print its id, for holding it across several commands'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "renew" -d 'Extend a lease acquired earlier, keeping its id'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "release" -d 'Release a lease (never someone else\'s)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "current" -d 'Show who holds a resource'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "is-held" -d 'Exit 0 if this lease id holds the resource, 1 if not'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "init" -d 'Create what the backend needs (e.g. the PostgreSQL table); safe to run again'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "doctor" -d 'Check the configured backend end to end and warn about unsafe settings'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "list" -d 'List every live lease on the configured backend'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s t -l ttl -d 'Lease TTL; renewed every TTL/3 while the command runs [default: 30s]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s w -l wait -d 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s E -l conflict-exit-code -d 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -l heartbeat -d 'Renew this often [default: TTL/3]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -l kill-after -d 'Grace between TERM and KILL when lockrun stops the command [default: min(TTL/6, 10s)]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -l events -d 'Write one JSON object per line for each state change (waiting, acquired, renewed, renewal_failed, lost, child_exited, released, busy) to file descriptor FD, or to stderr with -' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s n -l no-wait -d 'Try once; do not wait if the resource is busy'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -l fair -d 'Serve waiters first come, first served: each waits in the backend\'s line for the one before it (etcd only; others exit 78)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s h -l help -d 'Print help'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand run" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s t -l ttl -d 'Lease TTL [default: 1h]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s w -l wait -d 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s E -l conflict-exit-code -d 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s n -l no-wait -d 'Try once; do not wait if the resource is busy'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -l fair -d 'Serve waiters first come, first served: each waits in the backend\'s line for the one before it (etcd only; others exit 78)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -l json -d 'Print the lease as a JSON object instead of its id'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s h -l help -d 'Print help'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand acquire" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand renew" -s t -l ttl -d 'New TTL, counted from now [default: the lease\'s own TTL]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand renew" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand renew" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand renew" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand renew" -l json -d 'Print the renewed lease as a JSON object'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand renew" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand renew" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand renew" -s h -l help -d 'Print help'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand renew" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand release" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand release" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand release" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand release" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand release" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand release" -s h -l help -d 'Print help'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand release" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand current" -s f -l format -d 'Output format' -r -f -a "id\t'Only the lease id'
json\t'One JSON object'
rows\t'`key: value` rows'
oneline\t'One tab-separated line: resource, principal, lease id, token, acquired, expires'
lines\t'The values of the rows, one per line, without their names'
cols\t'A header line and a line of values, in aligned columns'"
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand current" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand current" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand current" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand current" -l id-only -d 'Print only the lease id (same as -f id; of the two, the last one given counts, as in stormlock)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand current" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand current" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand current" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand current" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand is-held" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand is-held" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand is-held" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand is-held" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand is-held" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand is-held" -s h -l help -d 'Print help'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand is-held" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand init" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand init" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand init" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand init" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand init" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand init" -s h -l help -d 'Print help'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand init" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -l ttl -d 'The run TTL to check [default: the configured run_ttl, 30s]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -l heartbeat -d 'The heartbeat to check [default: TTL/3]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -l kill-after -d 'The kill-after grace to check [default: min(TTL/6, 10s)]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -s h -l help -d 'Print help'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand doctor" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand list" -s f -l format -d 'Output format' -r -f -a "rows\t'A header, then one tab-separated row per lease (nothing when no lease is held)'
json\t'One JSON array of lease objects'"
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand list" -s c -l config -d 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]' -r -F
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand list" -s b -l backend -d 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand list" -s p -l principal -d 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]' -r
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand list" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug, -vvv trace)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand list" -s q -l quiet -d 'No progress, warnings or busy/not-held lines on stderr: only errors'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand list" -s V -l version -d 'Print version'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "run" -d 'Acquire a lease, run a command, renew while it runs, release when it exits'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "acquire" -d 'Acquire a lease and print its id, for holding it across several commands'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "renew" -d 'Extend a lease acquired earlier, keeping its id'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "release" -d 'Release a lease (never someone else\'s)'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "current" -d 'Show who holds a resource'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "is-held" -d 'Exit 0 if this lease id holds the resource, 1 if not'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "init" -d 'Create what the backend needs (e.g. the PostgreSQL table); safe to run again'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "doctor" -d 'Check the configured backend end to end and warn about unsafe settings'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "list" -d 'List every live lease on the configured backend'
complete -c lockrun -n "not __fish_lockrun_after_dashes; and __fish_lockrun_using_subcommand help; and not __fish_seen_subcommand_from run acquire renew release current is-held init doctor list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
