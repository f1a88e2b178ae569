//! Diagnostics: one line per message, in the format and on the stream of the
//! personality in use, filtered by verbosity. Quiet on the happy path.

use crate::Init;
use crate::personality::Personality;
use crate::prelude::*;
use crate::sys::{Stream, Sys};
use core::fmt;

/// How much a message matters; shown when `level as u8 <= verbosity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

/// Writes `msg` through `sys` when `init`'s verbosity lets it through.
/// A short line is built on the stack, so a forked child may log too.
pub fn emit(sys: &impl Sys, init: &Init, level: Level, msg: fmt::Arguments) {
    use fmt::Write;
    if level as u8 > init.verbosity {
        return;
    }
    let pid = sys.getpid();
    let mut line = Line::default();
    let stream = match init.personality {
        // tini sends INFO and below to stdout (tini.c's PRINT_INFO & co.).
        Personality::Tini => {
            let (tag, stream) = match level {
                Level::Error => ("FATAL", Stream::Stderr),
                Level::Warn => ("WARN ", Stream::Stderr),
                Level::Info => ("INFO ", Stream::Stdout),
                Level::Debug => ("DEBUG", Stream::Stdout),
                Level::Trace => ("TRACE", Stream::Stdout),
            };
            let _ = writeln!(line, "[{tag} tini ({pid})] {msg}");
            stream
        }
        Personality::DumbInit => {
            let _ = writeln!(line, "[dumb-init] {msg}");
            Stream::Stderr
        }
        Personality::Catatonit => {
            let _ = writeln!(line, "{} (catatonit:{pid}): {msg}", tag(level));
            Stream::Stderr
        }
        Personality::Cradle => {
            let _ = writeln!(line, "{}[{pid}]: {} {msg}", init.name, tag(level));
            Stream::Stderr
        }
    };
    sys.log(stream, line.as_str());
}

/// A line of text on the stack, moved to the heap only when it outgrows
/// the buffer: a forked child must not allocate (see `sys::Argv`).
pub struct Line {
    buf: [u8; 256],
    len: usize,
    spilled: Option<String>,
}

impl Default for Line {
    fn default() -> Line {
        Line {
            buf: [0; 256],
            len: 0,
            spilled: None,
        }
    }
}

impl Line {
    pub fn as_str(&self) -> &str {
        match &self.spilled {
            Some(s) => s,
            // Only whole `str`s are ever copied in.
            None => core::str::from_utf8(&self.buf[..self.len]).unwrap_or_default(),
        }
    }
}

impl fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if let Some(spilled) = &mut self.spilled {
            spilled.push_str(s);
        } else if self.len + s.len() <= self.buf.len() {
            self.buf[self.len..self.len + s.len()].copy_from_slice(s.as_bytes());
            self.len += s.len();
        } else {
            let mut spilled = String::from(self.as_str());
            spilled.push_str(s);
            self.spilled = Some(spilled);
        }
        Ok(())
    }
}

fn tag(level: Level) -> &'static str {
    match level {
        Level::Error => "ERROR",
        Level::Warn => "WARN",
        Level::Info => "INFO",
        Level::Debug => "DEBUG",
        Level::Trace => "TRACE",
    }
}

/// `emit` with format arguments: `log!(sys, init, Warn, "x {y}")`.
macro_rules! log {
    ($sys:expr, $init:expr, $level:ident, $($arg:tt)*) => {
        $crate::log::emit($sys, $init, $crate::log::Level::$level, format_args!($($arg)*))
    };
}
pub(crate) use log;
