//! Reading the small files that settings name (the config file, password files, certificates),
//! so that a wrong path can neither hang lockrun nor make it read without end.
//!
//! Besides regular files, `/dev/null` and pipes (`password_file = "/dev/fd/3"`, `-c <(make-config)`)
//! work. A FIFO that no one has opened for writing reads as empty rather than blocking, and an
//! endless device (`/dev/zero`) stops at [`LIMIT`].

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most such a file may hold: far more than any real one (a system CA bundle is about
/// 220 KiB), and a bound on what a wrong path can make lockrun read.
pub const LIMIT: u64 = 1 << 20;

/// The bytes of the file at `path`, at most [`LIMIT`] of them.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    // Non-blocking to open: a FIFO's open would wait for a writer.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::other("it is a directory"));
    }
    // Blocking to read: a pipe's writer may not have written yet.
    // SAFETY: fcntl on a descriptor we own has no memory-safety preconditions.
    unsafe {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        libc::fcntl(
            fd,
            libc::F_SETFL,
            libc::fcntl(fd, libc::F_GETFL) & !libc::O_NONBLOCK,
        );
    }
    let mut bytes = Vec::new();
    file.take(LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > LIMIT {
        return Err(io::Error::other("it is larger than 1 MiB"));
    }
    Ok(bytes)
}

/// The text of the file at `path` (UTF-8), at most [`LIMIT`] bytes of it.
pub fn read_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|_| io::Error::other("it is not UTF-8 text"))
}

/// Checks a file that a library will read itself (`SSL_CERT_FILE`, a kubeconfig): when it
/// exists, it must be a regular file, since a FIFO would block that read and a device such as
/// `/dev/zero` would never end it. `Err` is the reason, for a message.
pub fn check_regular(path: &Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) => {
            let t = meta.file_type();
            let what = if t.is_dir() {
                "a directory"
            } else if t.is_fifo() {
                "a FIFO"
            } else if t.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            Err(format!("it is {what}, not a regular file"))
        }
        // Missing or unreadable: the library says so in its own words.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_never_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // No writer: empty at once, not a hang.
        assert_eq!(read(&fifo).unwrap(), b"");
        assert_eq!(
            read(Path::new("/dev/zero")).unwrap_err().to_string(),
            "it is larger than 1 MiB"
        );
        assert_eq!(
            read(dir.path()).unwrap_err().to_string(),
            "it is a directory"
        );
        assert_eq!(read(Path::new("/dev/null")).unwrap(), b"");
        let file = dir.path().join("f");
        std::fs::write(&file, b"\xff").unwrap();
        assert_eq!(read(&file).unwrap(), b"\xff");
        assert_eq!(
            read_text(&file).unwrap_err().to_string(),
            "it is not UTF-8 text"
        );
        assert!(check_regular(&file).is_ok());
        assert!(check_regular(&dir.path().join("missing")).is_ok());
        assert_eq!(
            check_regular(&fifo).unwrap_err(),
            "it is a FIFO, not a regular file"
        );
        assert_eq!(
            check_regular(Path::new("/dev/zero")).unwrap_err(),
            "it is a device, not a regular file"
        );
    }
}
