//! `cradle-init ctl`: the control socket. The supervisor answers one
//! request line per connection (`status`, `start NAME`, `stop NAME`,
//! `restart NAME`, `signal SIG NAME`), only to root or its own uid (the
//! kernel's SO_PEERCRED, not anything the client says); the client sends
//! its arguments as that line and prints the answer.

use super::os;
use super::supervise::Supervisor;
use crate::prelude::*;
use crate::sys::{Fd, Stream, Sys};

/// The longest request read.
const MAX_REQUEST: usize = 256;
/// A client that connects and says nothing is dropped after this long, so
/// that it cannot hold the supervisor up.
const REQUEST_TIMEOUT_MS: libc::c_int = 200;

/// Answers the client on `conn`, whose uid the kernel gave as `uid`.
pub fn serve<S: Sys>(sup: &mut Supervisor<'_, S>, conn: Fd, uid: u32) {
    // SAFETY: getuid has no preconditions.
    let own = unsafe { libc::getuid() };
    // Read first even from a peer that is refused: closing with its
    // request unread would reset the connection and lose the answer.
    let request = read_request(conn);
    let reply = if uid != 0 && uid != own {
        "error: permission denied\n".into()
    } else {
        match request {
            Some(line) => sup.request(&line),
            None => "error: no request\n".into(),
        }
    };
    os::send_all(conn, reply.as_bytes());
    os::close(conn);
}

fn read_request(conn: Fd) -> Option<String> {
    let mut buf = [0u8; MAX_REQUEST];
    let mut len = 0;
    while len < buf.len() {
        let mut pfd = libc::pollfd {
            fd: conn,
            events: libc::POLLIN,
            revents: 0,
        };
        os::poll(core::slice::from_mut(&mut pfd), REQUEST_TIMEOUT_MS);
        if pfd.revents == 0 {
            return None;
        }
        match os::read(conn, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(crate::errno::Errno::EINTR | crate::errno::Errno::EAGAIN) => {}
            Err(_) => return None,
        }
        if buf[..len].contains(&b'\n') {
            break;
        }
    }
    let line = buf[..len].split(|b| *b == b'\n').next()?;
    core::str::from_utf8(line).ok().map(String::from)
}

/// `ctl ARGS…` as a client of the socket at `path`: prints the answer,
/// returns 0, or 1 when the answer is an error or there is no supervisor.
pub fn client(sys: &impl Sys, path: &str, args: &[&[u8]]) -> u8 {
    let request: Vec<String> = args
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if request.is_empty() || request.iter().any(|a| a.contains('\n')) {
        sys.log(
            Stream::Stderr,
            "usage: cradle-init ctl status | start NAME | stop NAME | restart NAME | signal SIG NAME\n",
        );
        return 2;
    }
    let conn = match os::connect_unix(path) {
        Ok(fd) => fd,
        Err(err) => {
            sys.log(
                Stream::Stderr,
                &format!("cradle-init ctl: connecting to `{path}`: {err}\n"),
            );
            return 1;
        }
    };
    let mut line = request.join(" ");
    line.push('\n');
    os::send_all(conn, line.as_bytes());
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: a live buffer of its length; a blocking read.
        let n = unsafe { libc::read(conn, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n as usize]);
    }
    os::close(conn);
    let answer = String::from_utf8_lossy(&answer);
    if let Some(err) = answer.strip_prefix("error: ") {
        sys.log(Stream::Stderr, &format!("cradle-init ctl: {err}"));
        1
    } else if answer.is_empty() {
        sys.log(Stream::Stderr, "cradle-init ctl: no answer\n");
        1
    } else {
        if answer != "ok\n" {
            sys.log(Stream::Stdout, &answer);
        }
        0
    }
}
