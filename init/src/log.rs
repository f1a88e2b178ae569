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
pub fn emit(sys: &impl Sys, init: &Init, level: Level, msg: fmt::Arguments) {
    if level as u8 > init.verbosity {
        return;
    }
    let pid = sys.getpid();
    let (stream, line) = match init.personality {
        // tini sends INFO and below to stdout (tini.c's PRINT_INFO & co.).
        Personality::Tini => {
            let (tag, stream) = match level {
                Level::Error => ("FATAL", Stream::Stderr),
                Level::Warn => ("WARN ", Stream::Stderr),
                Level::Info => ("INFO ", Stream::Stdout),
                Level::Debug => ("DEBUG", Stream::Stdout),
                Level::Trace => ("TRACE", Stream::Stdout),
            };
            (stream, format!("[{tag} tini ({pid})] {msg}\n"))
        }
        Personality::DumbInit => (Stream::Stderr, format!("[dumb-init] {msg}\n")),
        Personality::Catatonit => (
            Stream::Stderr,
            format!("{} (catatonit:{pid}): {msg}\n", tag(level)),
        ),
        Personality::Cradle => (
            Stream::Stderr,
            format!("{}[{pid}]: {} {msg}\n", init.name, tag(level)),
        ),
    };
    sys.log(stream, &line);
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
