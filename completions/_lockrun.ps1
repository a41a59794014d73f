
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'lockrun' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'lockrun'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'lockrun' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Acquire a lease, run a command, renew while it runs, release when it exits')
            [CompletionResult]::new('acquire', 'acquire', [CompletionResultType]::ParameterValue, 'Acquire a lease and print its id, for holding it across several commands')
            [CompletionResult]::new('renew', 'renew', [CompletionResultType]::ParameterValue, 'Extend a lease acquired earlier, keeping its id')
            [CompletionResult]::new('release', 'release', [CompletionResultType]::ParameterValue, 'Release a lease (never someone else''s)')
            [CompletionResult]::new('current', 'current', [CompletionResultType]::ParameterValue, 'Show who holds a resource')
            [CompletionResult]::new('is-held', 'is-held', [CompletionResultType]::ParameterValue, 'Exit 0 if this lease id holds the resource, 1 if not')
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Create what the backend needs (e.g. the PostgreSQL table); safe to run again')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Check the configured backend end to end and warn about unsafe settings')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List every live lease on the configured backend')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lockrun;run' {
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Lease TTL; renewed every TTL/3 while the command runs [default: 30s]')
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'Lease TTL; renewed every TTL/3 while the command runs [default: 30s]')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]')
            [CompletionResult]::new('-E', '-E ', [CompletionResultType]::ParameterName, 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)')
            [CompletionResult]::new('--conflict-exit-code', '--conflict-exit-code', [CompletionResultType]::ParameterName, 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)')
            [CompletionResult]::new('--heartbeat', '--heartbeat', [CompletionResultType]::ParameterName, 'Renew this often [default: TTL/3]')
            [CompletionResult]::new('--kill-after', '--kill-after', [CompletionResultType]::ParameterName, 'Grace between TERM and KILL when lockrun stops the command [default: min(TTL/6, 10s)]')
            [CompletionResult]::new('--events', '--events', [CompletionResultType]::ParameterName, 'Write one JSON object per line for each state change (waiting, acquired, renewed, renewal_failed, lost, child_exited, released, busy) to file descriptor FD, or to stderr with -')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Try once; do not wait if the resource is busy')
            [CompletionResult]::new('--no-wait', '--no-wait', [CompletionResultType]::ParameterName, 'Try once; do not wait if the resource is busy')
            [CompletionResult]::new('--fair', '--fair', [CompletionResultType]::ParameterName, 'Serve waiters first come, first served: each waits in the backend''s line for the one before it (etcd only; others exit 78)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lockrun;acquire' {
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'Lease TTL [default: 1h]')
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'Lease TTL [default: 1h]')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Wait at most this long for the lease (e.g. 30s, 10m; 0 tries once; forever) [default: wait forever]')
            [CompletionResult]::new('-E', '-E ', [CompletionResultType]::ParameterName, 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)')
            [CompletionResult]::new('--conflict-exit-code', '--conflict-exit-code', [CompletionResultType]::ParameterName, 'Exit code when the lease was not acquired (run: 0 skips quietly; acquire: not 0)')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('-n', '-n', [CompletionResultType]::ParameterName, 'Try once; do not wait if the resource is busy')
            [CompletionResult]::new('--no-wait', '--no-wait', [CompletionResultType]::ParameterName, 'Try once; do not wait if the resource is busy')
            [CompletionResult]::new('--fair', '--fair', [CompletionResultType]::ParameterName, 'Serve waiters first come, first served: each waits in the backend''s line for the one before it (etcd only; others exit 78)')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the lease as a JSON object instead of its id')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lockrun;renew' {
            [CompletionResult]::new('-t', '-t', [CompletionResultType]::ParameterName, 'New TTL, counted from now [default: the lease''s own TTL]')
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'New TTL, counted from now [default: the lease''s own TTL]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--json', '--json', [CompletionResultType]::ParameterName, 'Print the renewed lease as a JSON object')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lockrun;release' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lockrun;current' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--id-only', '--id-only', [CompletionResultType]::ParameterName, 'Print only the lease id (same as -f id; of the two, the last one given counts, as in stormlock)')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lockrun;is-held' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lockrun;init' {
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lockrun;doctor' {
            [CompletionResult]::new('--ttl', '--ttl', [CompletionResultType]::ParameterName, 'The run TTL to check [default: the configured run_ttl, 30s]')
            [CompletionResult]::new('--heartbeat', '--heartbeat', [CompletionResultType]::ParameterName, 'The heartbeat to check [default: TTL/3]')
            [CompletionResult]::new('--kill-after', '--kill-after', [CompletionResultType]::ParameterName, 'The kill-after grace to check [default: min(TTL/6, 10s)]')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lockrun;list' {
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'Output format')
            [CompletionResult]::new('-c', '-c', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('--config', '--config', [CompletionResultType]::ParameterName, 'Config file [env: LOCKRUN_CONFIG] [default: $XDG_CONFIG_HOME/lockrun/config.toml, then /etc/lockrun/config.toml]')
            [CompletionResult]::new('-b', '-b', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('--backend', '--backend', [CompletionResultType]::ParameterName, 'Backend URL (file:///dir, redis://host:6379/0, postgres://user@host/db) or the name of a [backend.NAME] config section [env: LOCKRUN_BACKEND] [default: file]')
            [CompletionResult]::new('-p', '-p', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('--principal', '--principal', [CompletionResultType]::ParameterName, 'Who holds the lease, shown to people waiting [env: LOCKRUN_PRINCIPAL] [default: user@host]')
            [CompletionResult]::new('-v', '-v', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('--verbose', '--verbose', [CompletionResultType]::ParameterName, 'More log output on stderr (-v info, -vv debug, -vvv trace)')
            [CompletionResult]::new('-q', '-q', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('--quiet', '--quiet', [CompletionResultType]::ParameterName, 'No progress, warnings or busy/not-held lines on stderr: only errors')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'lockrun;help' {
            [CompletionResult]::new('run', 'run', [CompletionResultType]::ParameterValue, 'Acquire a lease, run a command, renew while it runs, release when it exits')
            [CompletionResult]::new('acquire', 'acquire', [CompletionResultType]::ParameterValue, 'Acquire a lease and print its id, for holding it across several commands')
            [CompletionResult]::new('renew', 'renew', [CompletionResultType]::ParameterValue, 'Extend a lease acquired earlier, keeping its id')
            [CompletionResult]::new('release', 'release', [CompletionResultType]::ParameterValue, 'Release a lease (never someone else''s)')
            [CompletionResult]::new('current', 'current', [CompletionResultType]::ParameterValue, 'Show who holds a resource')
            [CompletionResult]::new('is-held', 'is-held', [CompletionResultType]::ParameterValue, 'Exit 0 if this lease id holds the resource, 1 if not')
            [CompletionResult]::new('init', 'init', [CompletionResultType]::ParameterValue, 'Create what the backend needs (e.g. the PostgreSQL table); safe to run again')
            [CompletionResult]::new('doctor', 'doctor', [CompletionResultType]::ParameterValue, 'Check the configured backend end to end and warn about unsafe settings')
            [CompletionResult]::new('list', 'list', [CompletionResultType]::ParameterValue, 'List every live lease on the configured backend')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'lockrun;help;run' {
            break
        }
        'lockrun;help;acquire' {
            break
        }
        'lockrun;help;renew' {
            break
        }
        'lockrun;help;release' {
            break
        }
        'lockrun;help;current' {
            break
        }
        'lockrun;help;is-held' {
            break
        }
        'lockrun;help;init' {
            break
        }
        'lockrun;help;doctor' {
            break
        }
        'lockrun;help;list' {
            break
        }
        'lockrun;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
