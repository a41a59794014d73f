
use builtin;
use str;

set edit:completion:arg-completer[lockrun] = {|@words|
    fn spaces {|n|
        builtin:repeat $n ' ' | str:join ''
    }
    fn cand {|text desc|
        edit:complex-candidate $text &display=$text' '(spaces (- 14 (wcswidth $text)))$desc
    }
    var command = 'lockrun'
    for word $words[1..-1] {
        if (str:has-prefix $word '-') {
            break
        }
        set command = $command';'$word
    }
    var completions = [
        &'lockrun'= {
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
            cand run 'Acquire a lease, run a command, renew while it runs, release when it exits'
            cand acquire 'Acquire a lease and print its id, for holding it across several commands'
            cand renew 'Extend a lease acquired earlier, keeping its id'
            cand release 'Release a lease (never someone else''s)'
            cand current 'Show who holds a resource'
            cand is-held 'Exit 0 if this lease id holds the resource, 1 if not'
            cand init 'Create what the backend needs (e.g. the PostgreSQL table); safe to run again'
            cand doctor 'Check the configured backend end to end and warn about unsafe settings'
            cand list 'List every live lease on the configured backend'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lockrun;run'= {
            cand -t 'Lease TTL; renewed every TTL/3 while the command runs [default: 30s]'
            cand --ttl 'Lease TTL; renewed every TTL/3 while the command runs [default: 30s]'
            cand -w 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]'
            cand --wait 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]'
            cand -E 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)'
            cand --conflict-exit-code 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)'
            cand --heartbeat 'Renew this often [default: TTL/3]'
            cand --kill-after 'Grace between TERM and KILL when lockrun stops the command [default: min(TTL/6, 10s)]'
            cand --events 'Write one JSON object per line for each state change (waiting, acquired, renewed, renewal_failed, lost, child_exited, released, busy) to file descriptor FD, or to stderr with -'
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand -n 'Try once; do not wait if the resource is busy'
            cand --no-wait 'Try once; do not wait if the resource is busy'
            cand --fair 'Serve waiters first come, first served: each waits in the backend''s line for the one before it (etcd only; others exit 78)'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lockrun;acquire'= {
            cand -t 'Lease TTL [default: 1h]'
            cand --ttl 'Lease TTL [default: 1h]'
            cand -w 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]'
            cand --wait 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]'
            cand -E 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)'
            cand --conflict-exit-code 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)'
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand -n 'Try once; do not wait if the resource is busy'
            cand --no-wait 'Try once; do not wait if the resource is busy'
            cand --fair 'Serve waiters first come, first served: each waits in the backend''s line for the one before it (etcd only; others exit 78)'
            cand --json 'Print the lease as a JSON object instead of its id'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lockrun;renew'= {
            cand -t 'New TTL, counted from now [default: the lease''s own TTL]'
            cand --ttl 'New TTL, counted from now [default: the lease''s own TTL]'
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --json 'Print the renewed lease as a JSON object'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lockrun;release'= {
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lockrun;current'= {
            cand -f 'Output format'
            cand --format 'Output format'
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --id-only 'Print only the lease id (same as -f id; of the two, the last one given counts, as in stormlock)'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lockrun;is-held'= {
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lockrun;init'= {
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lockrun;doctor'= {
            cand --ttl 'The run TTL to check [default: the configured run_ttl, 30s]'
            cand --heartbeat 'The heartbeat to check [default: TTL/3]'
            cand --kill-after 'The kill-after grace to check [default: min(TTL/6, 10s)]'
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help'
            cand --help 'Print help'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lockrun;list'= {
            cand -f 'Output format'
            cand --format 'Output format'
            cand -c 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand --config 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]'
            cand -b 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand --backend 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]'
            cand -p 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand --principal 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]'
            cand -v 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand --verbose 'More log output on stderr (-v info, -vv debug, -vvv trace)'
            cand -q 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand --quiet 'No progress, warnings or busy/not-held lines on stderr: only errors'
            cand -h 'Print help (see more with ''--help'')'
            cand --help 'Print help (see more with ''--help'')'
            cand -V 'Print version'
            cand --version 'Print version'
        }
        &'lockrun;help'= {
            cand run 'Acquire a lease, run a command, renew while it runs, release when it exits'
            cand acquire 'Acquire a lease and print its id, for holding it across several commands'
            cand renew 'Extend a lease acquired earlier, keeping its id'
            cand release 'Release a lease (never someone else''s)'
            cand current 'Show who holds a resource'
            cand is-held 'Exit 0 if this lease id holds the resource, 1 if not'
            cand init 'Create what the backend needs (e.g. the PostgreSQL table); safe to run again'
            cand doctor 'Check the configured backend end to end and warn about unsafe settings'
            cand list 'List every live lease on the configured backend'
            cand help 'Print this message or the help of the given subcommand(s)'
        }
        &'lockrun;help;run'= {
        }
        &'lockrun;help;acquire'= {
        }
        &'lockrun;help;renew'= {
        }
        &'lockrun;help;release'= {
        }
        &'lockrun;help;current'= {
        }
        &'lockrun;help;is-held'= {
        }
        &'lockrun;help;init'= {
        }
        &'lockrun;help;doctor'= {
        }
        &'lockrun;help;list'= {
        }
        &'lockrun;help;help'= {
        }
    ]
    $completions[$command]
}
