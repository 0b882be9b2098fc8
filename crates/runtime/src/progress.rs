//! A progress bar on the terminal that log lines step around: while one is shown, the
//! text log writer clears it, writes the line and draws it again (indicatif's `suspend`),
//! so neither garbles the other. Used by the producer's `--count` runs on a terminal.

use std::io::Write;
use std::sync::Mutex;

use indicatif::ProgressBar;

static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn shown() -> std::sync::MutexGuard<'static, Option<ProgressBar>> {
    SHOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Makes `bar` the one log lines step around (until [`hide`]).
pub fn show(bar: &ProgressBar) {
    *shown() = Some(bar.clone());
}

/// Log lines no longer step around a bar.
pub fn hide() {
    *shown() = None;
}

/// The log writer: stderr, around the bar shown if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = shown().clone();
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}
