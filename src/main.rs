//! The `lockrun` binary: build the runtime, run the command line, exit with its status.

/// Runs before `main`, and before Rust's runtime reopens closed standard descriptors.
#[used]
#[link_section = ".init_array"]
static NOTE_STD_FDS: extern "C" fn() = note_std_fds;

extern "C" fn note_std_fds() {
    lockrun::cmd::note_std_fds();
}

fn main() {
    // A panic (a bug, or a library that panics on a failure it could have returned, as tokio's
    // signal driver does when no descriptor is left) is one line and exit 70, not a dump. The
    // process ends at once, as an abort would: the guard then kills the command's group.
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write as _;
        let payload = info.payload();
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
        let line = format!("lockrun: internal error: {what}\n");
        let _ = std::io::stderr().write_all(line.as_bytes());
        std::process::exit(lockrun::exit::Exit::Internal.code().into());
    }));
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    lockrun::cmd::before_start(&args);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "lockrun: cannot start the async runtime: {e}"
            );
            std::process::exit(lockrun::exit::Exit::Internal.code().into());
        }
    };
    let exit = runtime.block_on(lockrun::cmd::main(args));
    if let lockrun::exit::Exit::Interrupted { signal, group } = exit {
        // Not after dropping the runtime, which would wait for any blocking task (a name
        // lookup) to end first.
        lockrun::exit::die_of(signal, group);
    }
    std::process::exit(exit.code().into());
}
