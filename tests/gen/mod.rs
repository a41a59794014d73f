//! Generates the man page and shell completions from the clap definition. Shared by
//! `cargo run --example gen-docs` (writes them) and `tests/docs.rs` (fails when they drift).

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// Every generated file, relative to the repository root, with its contents.
pub fn generate() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = lockrun::cli::Cli::command();
    let mut man = Vec::new();
    // `help` has no page of its own: keep it out of SEE ALSO.
    clap_mangen::Man::new(cmd.clone().disable_help_subcommand(true))
        .render(&mut man)
        .expect("render man page");
    out.push((PathBuf::from("man/lockrun.1"), main_page(man)));
    // Built, so that each verb carries the global options (-c, -b, -p, -v, -q) its page lists.
    let mut built = cmd.clone().disable_help_subcommand(true);
    built.build();
    for sub in built.get_subcommands() {
        let name = format!("lockrun-{}", sub.get_name());
        let mut page = Vec::new();
        clap_mangen::Man::new(
            sub.clone()
                .name(leak(&name))
                .bin_name(leak(&format!("lockrun {}", sub.get_name())))
                .version(env!("CARGO_PKG_VERSION")),
        )
        .render(&mut page)
        .expect("render man page");
        out.push((
            PathBuf::from(format!("man/{name}.1")),
            verb_page(sub.get_name(), page),
        ));
    }
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "lockrun", &mut buf);
        let buf = after_dashes(shell, buf);
        let name = match shell {
            Shell::Bash => "lockrun.bash",
            Shell::Zsh => "_lockrun",
            Shell::Fish => "lockrun.fish",
            Shell::Elvish => "lockrun.elv",
            _ => "_lockrun.ps1",
        };
        out.push((Path::new("completions").join(name), buf));
    }
    out
}

/// clap_mangen's synopsis leaves out the form most people type: `lockrun RESOURCE -- COMMAND`.
/// The long help's closing text (exit codes, environment, backends, configuration file) is laid
/// out in columns: it gets a section of its own, not filled (clap_mangen's EXTRA would reflow
/// the tables into run-on lines).
fn main_page(page: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8(page).expect("UTF-8 man page");
    let (head, rest) = text.split_once(".SH DESCRIPTION").expect("DESCRIPTION");
    let (rest, extra) = rest.split_once(".SH EXTRA\n").expect("EXTRA");
    let (extra, version) = extra.split_once(".SH VERSION").expect("VERSION");
    format!(
        "{head}.br\n\\fBlockrun\\fR [\\fIOPTIONS\\fR] <\\fIRESOURCE\\fR> \\fB\\-\\-\\fR <\\fICOMMAND\\fR> [\\fIARGS\\fR]...\n\
         .SH DESCRIPTION{rest}.SH \"EXIT STATUS, ENVIRONMENT, BACKENDS, FILES\"\n.nf\n{extra}.fi\n\
         .SH VERSION{version}"
    )
    .into_bytes()
}

/// A verb's page: `run` shows the `--` before the command, as one must type it; and every page
/// points to lockrun(1) for what they share (exit codes, environment, configuration, backends).
fn verb_page(verb: &str, page: Vec<u8>) -> Vec<u8> {
    let mut text = String::from_utf8(page).expect("UTF-8 man page");
    if verb == "run" {
        let plain = "<\\fIRESOURCE\\fR> <\\fICOMMAND\\fR>";
        assert!(text.contains(plain), "run's synopsis changed shape");
        text = text.replacen(
            plain,
            "<\\fIRESOURCE\\fR> \\fB\\-\\-\\fR <\\fICOMMAND\\fR> [\\fIARGS\\fR]...",
            1,
        );
    }
    let (body, version) = text.rsplit_once(".SH VERSION").expect("VERSION");
    format!(
        "{body}.SH \"EXIT STATUS\"\nAs listed in \\fBlockrun\\fR(1), which also describes the \
         environment, the configuration file and the backends.\n.SH \"SEE ALSO\"\n\
         \\fBlockrun\\fR(1)\n.SH VERSION{version}"
    )
    .into_bytes()
}

/// Everything after `--` is the command lockrun runs: clap's scripts would go on offering
/// lockrun's own verbs and options there (`lockrun deploy -- terr<TAB>`). Each script gets a
/// first step that hands the words after `--` to the shell's own command completion.
fn after_dashes(shell: Shell, script: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8(script).expect("UTF-8 completion script");
    let (head, step) = match shell {
        Shell::Bash => (
            "_lockrun() {\n",
            r#"    # After `--`: the command lockrun runs, completed as a command line of its own.
    local _lr_i
    for (( _lr_i = 1; _lr_i < COMP_CWORD; _lr_i++ )); do
        if [[ ${COMP_WORDS[_lr_i]} == -- ]]; then
            if declare -F _command_offset >/dev/null; then
                _command_offset $(( _lr_i + 1 ))
            elif (( COMP_CWORD == _lr_i + 1 )); then
                COMPREPLY=( $(compgen -c -- "${COMP_WORDS[COMP_CWORD]}") )
            else
                COMPREPLY=( $(compgen -f -- "${COMP_WORDS[COMP_CWORD]}") )
            fi
            return 0
        fi
    done
"#,
        ),
        Shell::Zsh => (
            "_lockrun() {\n",
            r#"    # After `--`: the command lockrun runs, completed as a command line of its own.
    local -i _lr_i=${words[(i)--]}
    if (( _lr_i < CURRENT )); then
        shift $_lr_i words
        (( CURRENT -= _lr_i ))
        _normal
        return
    fi
"#,
        ),
        Shell::Fish => (
            "",
            r#"# After `--`: the command lockrun runs, completed as a command line of its own; none of
# lockrun's own completions apply there.
function __fish_lockrun_after_dashes
    contains -- -- (commandline -opc)
end
complete -c lockrun -n __fish_lockrun_after_dashes -x -a '(set -l t (commandline -opc); set -e t[1..(contains -i -- -- $t)]; complete -C (string join " " -- (string escape -- $t) (commandline -ct)))'
"#,
        ),
        _ => return text.into_bytes(),
    };
    let mut text = if head.is_empty() {
        format!("{step}{text}")
    } else {
        assert!(text.contains(head), "{shell}: no {head:?} in clap's script");
        text.replacen(head, &format!("{head}{step}"), 1)
    };
    if shell == Shell::Fish {
        // clap's completions stop where the command begins.
        text = text.replace(
            "complete -c lockrun -n \"",
            "complete -c lockrun -n \"not __fish_lockrun_after_dashes; and ",
        );
        text = text.replace(
            "complete -c lockrun -n \"not __fish_lockrun_after_dashes; and __fish_lockrun_after_dashes",
            "complete -c lockrun -n \"__fish_lockrun_after_dashes",
        );
    }
    text.into_bytes()
}

/// clap names are `&'static str`; the generator runs once, so leaking a few names is fine.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}
