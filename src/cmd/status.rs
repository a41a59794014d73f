//! The "waiting for" line on stderr. On a terminal it stays live, with the elapsed time and the
//! holder's time left; elsewhere it is printed once per holder (per lease, however often the
//! waiter finds it busy), so logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tokio::time::Instant;

use crate::lease::{Lease, LeaseId, Resource};
use crate::wait::Event;

pub struct Status {
    resource: String,
    enabled: bool,
    tty: bool,
    start: Instant,
    /// The holder last reported: `Some(None)` when it could not be read.
    holder: Option<Option<Lease>>,
    /// The lease last reported: a new one is printed (not on a terminal) and told to the caller.
    reported: Option<Option<LeaseId>>,
    live: bool,
    /// When the live line was last drawn: it is redrawn at most twice a second (the ticks come once a second), or at once for a
    /// new holder, not at every busy answer and tick besides.
    drawn_at: Option<Instant>,
    /// The last "still waiting" warning and when it was printed.
    retried: Option<(String, Instant)>,
}

/// How often a backend error is shown while waiting: at most this often, whether or not it
/// changed (a server that restarts fails with "broken pipe", then "connection refused", within
/// milliseconds).
const RETRY_REPEAT: Duration = Duration::from_secs(10);

impl Status {
    pub fn new(resource: &Resource, enabled: bool) -> Self {
        Status {
            resource: crate::lease::escape(resource.as_str()),
            enabled,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            holder: None,
            reported: None,
            live: false,
            drawn_at: None,
            retried: None,
        }
    }

    /// Records an event from the waiting loop; true when it names a holder not reported before
    /// (the `waiting` event goes out only then).
    pub fn event(&mut self, e: Event<'_>) -> bool {
        match e {
            Event::Busy { holder } => {
                let id = holder.map(|h| h.id.clone());
                let new = self.reported.as_ref() != Some(&id);
                self.reported = Some(id);
                self.holder = Some(holder.cloned());
                if new || (self.tty && self.due()) {
                    self.draw();
                }
                new
            }
            Event::Retrying { error } => {
                let text = crate::error::without_os_error(&error.to_string());
                let now = Instant::now();
                let repeat = match &self.retried {
                    Some((_, at)) => now >= *at + RETRY_REPEAT,
                    None => true,
                };
                if self.enabled && repeat {
                    self.clear();
                    say!(
                        "lockrun: warning: still waiting for {}: {text}",
                        self.resource
                    );
                    self.retried = Some((text, now));
                }
                false
            }
        }
    }

    /// Redraws the live line (called every second on a terminal).
    pub fn tick(&mut self) {
        if self.tty && self.holder.is_some() && self.due() {
            self.draw();
        }
    }

    /// Whether the live line is due for a redraw.
    fn due(&self) -> bool {
        self.drawn_at
            .map_or(true, |at| at.elapsed() >= Duration::from_millis(500))
    }

    /// How often [`Status::tick`] is worth calling.
    pub fn tick_every(&self) -> Option<Duration> {
        (self.enabled && self.tty).then_some(Duration::from_secs(1))
    }

    fn draw(&mut self) {
        if !self.enabled {
            return;
        }
        let Some(lease) = &self.holder else { return };
        let holder = lease
            .as_ref()
            .map_or_else(|| "held by someone".into(), Lease::holder_summary);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let elapsed =
                crate::duration::format(Duration::from_secs(self.start.elapsed().as_secs()));
            let line = format!(
                "lockrun: waiting for {} ({elapsed}): {holder}",
                self.resource
            );
            // A line longer than the terminal wraps, and `\r\x1b[K` clears only its last row:
            // each redraw would leave a row behind.
            let _ = err.write_all(format!("\r\x1b[K{}", fit(&line, columns())).as_bytes());
            self.live = true;
            self.drawn_at = Some(Instant::now());
        } else {
            // One write(2), so that lines of concurrent lockruns sharing a log do not mix.
            let line = format!("lockrun: waiting for {}: {holder}\n", self.resource);
            let _ = err.write_all(line.as_bytes());
        }
        let _ = err.flush();
    }

    /// Removes the live line.
    pub fn clear(&mut self) {
        if self.live {
            {
                use std::io::Write as _;
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            }
            self.live = false;
        }
    }
}

/// The width of the terminal on stderr, when it tells.
fn columns() -> Option<usize> {
    // SAFETY: an all-zero winsize is valid, and TIOCGWINSZ only writes one.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; a failure leaves `ws` untouched.
    let r = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// `line`, cut with an ellipsis to fit in `width` columns less one (a line that fills the last
/// column leaves the cursor on the next row on some terminals). Characters from U+1100 on count
/// as two columns, as the wide ones among them take: a line may come out shorter than it could,
/// never longer.
fn fit(line: &str, width: Option<usize>) -> std::borrow::Cow<'_, str> {
    let Some(width) = width else {
        return line.into();
    };
    let room = width.saturating_sub(1);
    let cols = |c: char| if c < '\u{1100}' { 1 } else { 2 };
    if line.chars().map(cols).sum::<usize>() <= room {
        return line.into();
    }
    let mut used = 0;
    let mut out = String::new();
    for c in line.chars() {
        if used + cols(c) + 1 > room {
            break;
        }
        used += cols(c);
        out.push(c);
    }
    out.push('…');
    out.into()
}

impl Drop for Status {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Error;

    #[test]
    fn the_live_line_fits_the_terminal() {
        let line = "lockrun: waiting for res (3s): alice@host since 10:00:00";
        assert_eq!(fit(line, None), line);
        assert_eq!(fit(line, Some(200)), line);
        assert_eq!(fit(line, Some(line.len() + 1)), line);
        assert_eq!(
            fit(line, Some(line.len())),
            "lockrun: waiting for res (3s): alice@host since 10:00:…"
        );
        assert_eq!(fit(line, Some(20)), "lockrun: waiting f…");
        assert_eq!(fit("lockrun: 日本語", Some(14)), "lockrun: 日…");
    }

    #[tokio::test(start_paused = true)]
    async fn the_live_line_is_not_redrawn_at_every_busy_answer_and_tick() {
        let mut s = Status::new(&Resource::new("r").unwrap(), true);
        s.tty = true;
        s.event(Event::Busy { holder: None });
        let first = s.drawn_at.expect("drawn at the first busy answer");
        tokio::time::advance(Duration::from_millis(10)).await;
        s.event(Event::Busy { holder: None });
        s.tick();
        assert_eq!(s.drawn_at, Some(first), "redrawn within 10 ms");
        tokio::time::advance(Duration::from_secs(1)).await;
        s.tick();
        assert!(s.drawn_at > Some(first), "not redrawn a second later");
        s.clear();
    }

    #[tokio::test(start_paused = true)]
    async fn backend_errors_are_shown_at_most_every_ten_seconds() {
        let mut s = Status::new(&Resource::new("r").unwrap(), true);
        let down = Error::Unavailable("down".into());
        let printed = |s: &Status| s.retried.clone().map(|(t, at)| (t, at.elapsed()));
        s.event(Event::Retrying { error: &down });
        assert_eq!(printed(&s), Some(("down".into(), Duration::ZERO)));
        tokio::time::advance(Duration::from_secs(3)).await;
        s.event(Event::Retrying { error: &down });
        assert_eq!(
            printed(&s),
            Some(("down".into(), Duration::from_secs(3))),
            "not again"
        );
        tokio::time::advance(Duration::from_secs(7)).await;
        s.event(Event::Retrying { error: &down });
        assert_eq!(
            printed(&s),
            Some(("down".into(), Duration::ZERO)),
            "again after 10s"
        );
        let other = Error::Unavailable("refused".into());
        tokio::time::advance(Duration::from_secs(1)).await;
        s.event(Event::Retrying { error: &other });
        assert_eq!(
            printed(&s),
            Some(("down".into(), Duration::from_secs(1))),
            "not even a new error within 10s"
        );
        tokio::time::advance(Duration::from_secs(9)).await;
        s.event(Event::Retrying { error: &other });
        assert_eq!(
            printed(&s),
            Some(("refused".into(), Duration::ZERO)),
            "the new one after 10s"
        );
    }
}
