//! The `init` binary: parse the command line, run, exit with the code. Its
//! name picks the personality: `tini`/`docker-init`, `dumb-init`,
//! `catatonit`/`podman-init`, or cradle's own under any other name. Named
//! `cradle-exec`, it is the launcher's exec stub instead ([`exec_stub`]).
//!
//! `no_main`: the C `main` takes argv straight from libc and skips Rust's
//! runtime start-up (stack guard probing, SIGPIPE setup), instructions a
//! PID 1 has no use for. Built with `panic = "abort"` (the static `small`
//! profile), it links no std at all: std's panic machinery (backtraces,
//! DWARF parsing, decompression) would be most of the binary.

#![no_main]
#![cfg_attr(panic = "abort", no_std)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::ffi::{CStr, c_char, c_int};
use init::{Invocation, Linux, Stream, Sys};

#[unsafe(no_mangle)]
extern "C" fn main(argc: c_int, argv: *const *const c_char) -> c_int {
    if argc >= 3 && args(1, argv)[0] == EXEC_STUB {
        return exec_stub(argv);
    }
    let argv = args(argc, argv);
    let env = init::Env::from_process();
    if argv.get(1) == Some(&&b"ctl"[..])
        && init::Personality::from_argv0(&String::from_utf8_lossy(argv[0]))
            == init::Personality::Cradle
    {
        let socket = env
            .get("CRADLE_CTL_SOCKET")
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .unwrap_or_else(|| init::services::CTL_SOCKET.into());
        return c_int::from(init::services::ctl::client(&Linux, &socket, &argv[2..]));
    }
    let code = match init::args::parse(&argv, |k| env.get(k)) {
        Ok(Invocation::Run(init)) => match init.run(&Linux) {
            Ok(code) => code.0,
            Err(err) => {
                report(&err);
                1
            }
        },
        Ok(Invocation::Print(out)) => {
            Linux.log(out.stream, &out.text);
            out.code
        }
        Err(err) => {
            report(&err);
            1
        }
    };
    c_int::from(code)
}

/// The argv[0] under which the launcher runs this binary as its exec stub.
const EXEC_STUB: &[u8] = b"cradle-exec";

/// `cradle-exec PATH ARGV0 ARGS…`: execs PATH with ARGV0 ARGS… and the
/// environment as they are, and nothing else. The launcher runs the workload
/// through this, from a sealed in-memory copy, so that while the kernel
/// resolves the workload (its path, a `#!` interpreter, an ELF interpreter)
/// `/proc/self/exe` names no host file: an image whose entrypoint is
/// `/proc/self/exe` gets this copy again, never the launcher's binary (the
/// CVE-2019-5736 class; runc's "dmz" binary does the same job).
fn exec_stub(argv: *const *const c_char) -> c_int {
    // SAFETY: the C runtime's argv has at least three valid entries (checked
    // by the caller) and a terminating null; execv only reads them.
    let errno = unsafe {
        libc::execv(*argv.add(1), argv.add(2));
        init::Errno::last()
    };
    let path = args(2, argv)[1];
    let mut line = String::from("cradle-exec: executing `");
    line.push_str(&String::from_utf8_lossy(path));
    line.push_str(&alloc::format!("`: {errno}\n"));
    Linux.log(Stream::Stderr, &line);
    // As a shell and docker: 127 when there is no such file, 126 otherwise.
    if errno == init::Errno::ENOENT {
        127
    } else {
        126
    }
}

/// argv as the kernel passed it; the strings live as long as the process.
fn args(argc: c_int, argv: *const *const c_char) -> Vec<&'static [u8]> {
    (0..usize::try_from(argc).unwrap_or(0))
        .map(|i| {
            // SAFETY: the C runtime passes argc valid, NUL-terminated strings
            // that are never freed.
            unsafe { CStr::from_ptr(*argv.add(i)) }.to_bytes()
        })
        .collect()
}

/// Prints an error and its causes once, as `init: what: cause`.
fn report(err: &init::Error) {
    use core::fmt::Write;
    let mut line = String::new();
    let _ = write!(line, "init: {err}");
    let mut source = core::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(line, ": {cause}");
        source = cause.source();
    }
    line.push('\n');
    Linux.log(Stream::Stderr, &line);
}

/// Without std, memory comes from the C library's malloc.
#[cfg(panic = "abort")]
mod no_std_runtime {
    use core::alloc::{GlobalAlloc, Layout};

    struct Malloc;

    // SAFETY: malloc/free/realloc meet GlobalAlloc's contract for alignments
    // up to max_align_t (16), which is all the init ever asks for; larger
    // ones go through posix_memalign.
    unsafe impl GlobalAlloc for Malloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.align() <= 16 {
                // SAFETY: any size may be asked of malloc.
                unsafe { libc::malloc(layout.size()).cast() }
            } else {
                let mut p = core::ptr::null_mut();
                // SAFETY: the alignment is a power of two, a multiple of the pointer size.
                match unsafe { libc::posix_memalign(&mut p, layout.align(), layout.size()) } {
                    0 => p.cast(),
                    _ => core::ptr::null_mut(),
                }
            }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            // SAFETY: ptr came from malloc or posix_memalign.
            unsafe { libc::free(ptr.cast()) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if layout.align() <= 16 {
                // SAFETY: ptr came from malloc.
                unsafe { libc::realloc(ptr.cast(), new_size).cast() }
            } else {
                // SAFETY: the default path: alloc, copy, dealloc.
                unsafe {
                    let new =
                        self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                    if !new.is_null() {
                        core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    new
                }
            }
        }
    }

    #[global_allocator]
    static ALLOC: Malloc = Malloc;

    // Without std nothing asks for the C library; the static musl one from
    // the Rust sysroot (the self-contained libc.a) serves.
    #[link(name = "c", kind = "static", modifiers = "-bundle")]
    unsafe extern "C" {}

    /// The precompiled `core` and `alloc` carry unwind tables naming this
    /// routine; with `panic = "abort"` nothing unwinds, so it never runs.
    #[unsafe(no_mangle)]
    extern "C" fn rust_eh_personality() {}

    /// Named by the same precompiled code, for the same unwinding that
    /// never happens here.
    #[unsafe(no_mangle)]
    extern "C" fn _Unwind_Resume() -> ! {
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() }
    }

    /// A panic is a bug; die at once, as std's abort does, with SIGABRT.
    #[panic_handler]
    fn panic(_: &core::panic::PanicInfo) -> ! {
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() }
    }
}
