//! The `init` binary: parse the command line, run, exit with the code. Its
//! name picks the personality: `tini`/`docker-init`, `dumb-init`,
//! `catatonit`/`podman-init`, or cradle's own under any other name.
//!
//! `no_main`: the C `main` takes argv straight from libc and skips Rust's
//! runtime start-up (stack guard probing, SIGPIPE setup), which would be
//! most of the instructions a PID 1 executes for `-- /bin/true`.

#![no_main]

use init::{Invocation, Linux, Stream, Sys};
use std::ffi::{CStr, OsString, c_char, c_int};
use std::os::unix::ffi::OsStringExt;

#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    let argv = args(argc, argv);
    let code = match init::args::parse(&argv, |k| std::env::var_os(k)) {
        Ok(Invocation::Run(init)) => match init.run(&Linux) {
            Ok(code) => code.0,
            Err(err) => {
                report(&init.program(), &err);
                1
            }
        },
        Ok(Invocation::Print(out)) => {
            Linux.log(out.stream, &out.text);
            out.code
        }
        Err(err) => {
            report("init", &err);
            1
        }
    };
    c_int::from(code)
}

/// argv as the kernel passed it.
fn args(argc: c_int, argv: *const *const c_char) -> Vec<OsString> {
    (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            // SAFETY: the C runtime passes argc valid, NUL-terminated strings.
            let arg = unsafe { CStr::from_ptr(*argv.add(i)) };
            OsString::from_vec(arg.to_bytes().to_vec())
        })
        .collect()
}

/// Prints an error and its causes once, as `init: what: cause`.
fn report(_program: &str, err: &init::Error) {
    let mut line = format!("init: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line.push('\n');
    Linux.log(Stream::Stderr, &line);
}
