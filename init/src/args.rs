//! Args step: the command line and environment, read the way the
//! personality picked by `argv[0]` reads them. Option parsing stops at the
//! first non-option and takes only the first `--`.

use crate::personality::Personality;
use crate::prelude::*;
use crate::signals;
use crate::sys::Stream;
use crate::{Error, Init};
use alloc::ffi::CString;
use core::time::Duration;

/// What a command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Run the init.
    Run(Box<Init>),
    /// Print a text (help, version, license or a usage error) and exit.
    Print(Printout),
}

/// A text to print instead of running, where to, and the exit code after.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Printout {
    pub text: String,
    pub stream: Stream,
    pub code: u8,
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Parses `argv` (with `argv[0]`; bytes, as the kernel passes them: use
/// `OsStrExt::as_bytes` on an `OsString`) and the variables `env` returns.
pub fn parse<A: AsRef<[u8]>>(
    argv: &[A],
    env: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Invocation, Error> {
    let argv: Vec<&[u8]> = argv.iter().map(AsRef::as_ref).collect();
    let argv0 = argv.first().map(|a| lossy(a)).unwrap_or_default();
    let personality = Personality::from_argv0(&argv0);
    let name = match argv0.rsplit('/').next() {
        Some(base) if !base.is_empty() => base.to_string(),
        _ => "init".to_string(),
    };
    let mut p = Parser {
        argv0: if argv0.is_empty() {
            "init".to_string()
        } else {
            argv0.clone()
        },
        personality,
        name: name.clone(),
        init: Init::new(Vec::<Vec<u8>>::new()),
    };
    p.init = p.init.personality(personality).name(name);
    p.read_env(&env);

    // tini takes `--version` only as its one argument, and no other long
    // option: getopt reads `--x` as the short options `-`, `x`.
    if personality == Personality::Tini && argv.len() == 2 && argv[1] == b"--version" {
        return Ok(Invocation::Print(p.version()));
    }
    let mut i = 1;
    while let Some(&bytes) = argv.get(i) {
        if bytes == b"--" {
            i += 1;
            break;
        }
        if !bytes.starts_with(b"-") || bytes == b"-" {
            break;
        }
        i += 1;
        let next = argv.get(i).copied();
        let long = match personality {
            Personality::Tini => None,
            _ => bytes.strip_prefix(b"--"),
        };
        let used = if let Some(long) = long {
            p.long(&String::from_utf8_lossy(long), next)
        } else {
            p.shorts(&bytes[1..], next)
        };
        match used {
            Ok(true) => i += 1,
            Ok(false) => {}
            Err(out) => return Ok(Invocation::Print(out)),
        }
    }

    if p.init.pause {
        return Ok(Invocation::Run(Box::new(p.init)));
    }
    let workload = &argv[i.min(argv.len())..];
    if workload.is_empty() {
        // Services alone: they run until a stop signal.
        if personality == Personality::Cradle && p.init.services.any() {
            return Ok(Invocation::Run(Box::new(p.init)));
        }
        return Ok(Invocation::Print(p.missing_program()));
    }
    if let Some(arg) = workload.iter().find(|a| a.contains(&0)) {
        return Err(Error::NulInArgument { arg: lossy(arg) });
    }
    p.init.argv = workload
        .iter()
        .map(|a| CString::new(*a).unwrap_or_default())
        .collect();
    Ok(Invocation::Run(Box::new(p.init)))
}

struct Parser {
    /// As given, for the messages that getopt(3) and dumb-init print with it.
    argv0: String,
    personality: Personality,
    name: String,
    init: Init,
}

impl Parser {
    /// Applies a builder method to the init being parsed.
    fn update(&mut self, f: impl FnOnce(Init) -> Init) {
        let init = core::mem::replace(&mut self.init, Init::new(Vec::<Vec<u8>>::new()));
        self.init = f(init);
    }

    fn read_env(&mut self, env: &impl Fn(&str) -> Option<Vec<u8>>) {
        let is = |k: &str, v: &str| env(k).is_some_and(|x| x == v.as_bytes());
        let own = self.personality == Personality::Cradle;
        if own || self.personality == Personality::Tini {
            // tini only checks that these are set, whatever their value.
            if env("TINI_SUBREAPER").is_some() {
                self.init.subreaper = true;
            }
            if env("TINI_KILL_PROCESS_GROUP").is_some() {
                self.init.forward_to_group = true;
            }
            if let Some(level) = env("TINI_VERBOSITY").and_then(|v| lossy(&v).parse().ok()) {
                self.init.verbosity = level;
            }
        }
        if own || self.personality == Personality::DumbInit {
            if is("DUMB_INIT_SETSID", "0") {
                self.update(|init| init.new_session(false).own_group(own));
            } else if own && is("DUMB_INIT_SETSID", "1") {
                self.update(|init| init.new_session(true));
            }
            if is("DUMB_INIT_DEBUG", "1") {
                self.init.verbosity = 3;
                self.init.announce_debug = !own;
            }
        }
        if let Some(grace) = env("CRADLE_GRACE").and_then(|v| parse_secs(&lossy(&v))) {
            self.init.grace = Some(grace);
        }
        if own && let Some(path) = env("CRADLE_CTL_SOCKET") {
            self.init.services.ctl_socket = Some(lossy(&path));
        }
        if let Some(level) = env("CRADLE_LOG").and_then(|v| parse_level(&lossy(&v))) {
            self.init.verbosity = level;
        }
    }

    /// One `--name[=value]`; Ok(true) when it used `next` as its value.
    fn long(&mut self, arg: &str, next: Option<&[u8]>) -> Result<bool, Printout> {
        let (given, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg, None),
        };
        let (name, takes_value) = self.long_option(given, arg)?;
        let (value, used_next) = match (takes_value, inline) {
            (true, Some(v)) => (Some(v), false),
            (true, None) => match next {
                Some(v) => (Some(lossy(v)), true),
                None if self.personality == Personality::Cradle => {
                    return Err(self.bad(&format!("option `--{name}` needs a value")));
                }
                None => {
                    let text = format!("option '--{name}' requires an argument");
                    return Err(self.getopt_error(&text));
                }
            },
            (false, Some(_)) if self.personality == Personality::Cradle => {
                return Err(self.bad(&format!("option `--{name}` takes no value")));
            }
            (false, Some(_)) => {
                let text = format!("option '--{name}' doesn't allow an argument");
                return Err(self.getopt_error(&text));
            }
            (false, None) => (None, false),
        };
        let value = value.unwrap_or_default();
        match name {
            "version" => return Err(self.version()),
            "help" => return Err(self.help()),
            "grace" => self.grace(&value)?,
            "services" => self.init.services.dir = Some(value),
            "root" => self.init.services.root = Some(value),
            "rewrite" => self.rewrite(&value)?,
            "single-child" => self.single_child(),
            "verbose" => self.verbose(),
            // "license", the last of ours.
            _ => return Err(self.license()),
        }
        Ok(used_next)
    }

    /// The long option `given` stands for, and whether it takes a value.
    /// The originals use getopt_long, which takes any unambiguous prefix
    /// (`--sing`); ours takes whole names only.
    fn long_option(&self, given: &str, arg: &str) -> Result<(&'static str, bool), Printout> {
        let longs: &[(&'static str, bool)] = match self.personality {
            Personality::Cradle => &[
                ("version", false),
                ("help", false),
                ("grace", true),
                ("services", true),
                ("root", true),
                ("rewrite", true),
                ("single-child", false),
                ("verbose", false),
                ("license", false),
            ],
            Personality::DumbInit => &[
                ("single-child", false),
                ("rewrite", true),
                ("verbose", false),
                ("help", false),
                ("version", false),
            ],
            Personality::Catatonit => &[("version", false)],
            Personality::Tini => &[],
        };
        if let Some(&exact) = longs.iter().find(|(n, _)| *n == given) {
            return Ok(exact);
        }
        if self.personality == Personality::Cradle {
            return Err(self.unknown(&format!("--{given}")));
        }
        let matches: Vec<_> = longs.iter().filter(|(n, _)| n.starts_with(given)).collect();
        match matches[..] {
            [&only] if !given.is_empty() => Ok(only),
            [_, _, ..] if !given.is_empty() => {
                let mut text = format!("option '--{given}' is ambiguous; possibilities:");
                for (n, _) in matches {
                    text.push_str(&format!(" '--{n}'"));
                }
                Err(self.getopt_error(&text))
            }
            _ => Err(self.getopt_error(&format!("unrecognized option '--{arg}'"))),
        }
    }

    /// A cluster of short options (`-vvg`, `-e3`, `-p SIGKILL`); Ok(true)
    /// when the last one took `next` as its value. Each personality takes
    /// only its original's options.
    fn shorts(&mut self, cluster: &[u8], next: Option<&[u8]>) -> Result<bool, Printout> {
        let optstring = match self.personality {
            Personality::Tini => "hsp:vwge:l",
            Personality::DumbInit => "hvVcr:",
            Personality::Catatonit => "ghLPV",
            Personality::Cradle => "sgvwcPhlLVp:e:r:",
        };
        for (at, &c) in cluster.iter().enumerate() {
            let opts = optstring.as_bytes();
            let Some(spec) = opts.iter().position(|o| *o == c && c != b':') else {
                return Err(self.unknown(&format!("-{}", c as char)));
            };
            let c = c as char;
            if opts.get(spec + 1) == Some(&b':') {
                let rest = &cluster[at + 1..];
                let (value, used_next) = if !rest.is_empty() {
                    (String::from_utf8_lossy(rest).into_owned(), false)
                } else if let Some(v) = next {
                    (lossy(v), true)
                } else if self.personality == Personality::Cradle {
                    return Err(self.bad(&format!("option `-{c}` needs a value")));
                } else {
                    let text = format!("option requires an argument -- '{c}'");
                    return Err(self.getopt_error(&text));
                };
                match c {
                    'p' => self.death_signal(&value)?,
                    'e' => self.remap(&value)?,
                    _ => self.rewrite(&value)?,
                }
                return Ok(used_next);
            }
            match c {
                's' => self.init.subreaper = true,
                'g' => self.init.forward_to_group = true,
                'v' => self.verbose(),
                'w' => self.init.warn_on_reap = true,
                'c' => self.single_child(),
                'P' => self.init.pause = true,
                'h' => return Err(self.help()),
                'V' => return Err(self.version()),
                // 'l' or 'L', the last of the option strings' letters.
                _ => return Err(self.license()),
            }
        }
        Ok(false)
    }

    fn verbose(&mut self) {
        // dumb-init's -v is all or nothing: debug output.
        if self.personality == Personality::DumbInit {
            self.init.verbosity = 3;
        } else {
            self.init.verbosity = self.init.verbosity.saturating_add(1);
        }
    }

    fn single_child(&mut self) {
        self.update(|init| init.new_session(false));
    }

    fn grace(&mut self, value: &str) -> Result<(), Printout> {
        match parse_secs(value) {
            Some(grace) => {
                self.init.grace = Some(grace);
                Ok(())
            }
            None => Err(self.bad(&format!("invalid grace period `{value}` (seconds)"))),
        }
    }

    fn rewrite(&mut self, value: &str) -> Result<(), Printout> {
        if self.personality == Personality::DumbInit {
            return match scan_rewrite(value) {
                Some((from, to)) if (1..=31).contains(&from) && (0..=31).contains(&to) => {
                    self.update(|init| init.rewrite(from, to));
                    Ok(())
                }
                _ => Err(Printout {
                    text: "Usage: -r option takes <signum>:<signum>, where <signum> is between 1 and 31.\n\
                           This option can be specified multiple times.\n\
                           Use --help for full usage.\n"
                        .to_string(),
                    stream: Stream::Stderr,
                    code: 1,
                }),
            };
        }
        let pair = value.split_once(':').and_then(|(s, r)| {
            let from = s.parse::<i32>().ok().filter(|n| (1..=64).contains(n))?;
            let to = r.parse::<i32>().ok().filter(|n| (0..=64).contains(n))?;
            Some((from, to))
        });
        match pair {
            Some((from, to)) => {
                self.update(|init| init.rewrite(from, to));
                Ok(())
            }
            None => Err(self.bad(&format!(
                "invalid rewrite `{value}` (expected s:r, signal numbers)"
            ))),
        }
    }

    fn remap(&mut self, value: &str) -> Result<(), Printout> {
        let code = match self.personality {
            // tini: strtol(3) in base 10, the whole text, 0 to 255.
            Personality::Tini => match scan_int(value) {
                Some((n, "")) => u8::try_from(n).ok(),
                _ => None,
            },
            _ => value.parse::<u8>().ok(),
        };
        match code {
            Some(code) => {
                self.init.remap_to_zero.push(code);
                Ok(())
            }
            None if self.personality == Personality::Tini => Err(self.tini_invalid('e', value)),
            None => Err(self.bad(&format!("invalid exit code `{value}` (0 to 255)"))),
        }
    }

    fn death_signal(&mut self, value: &str) -> Result<(), Printout> {
        // tini takes the full upper-case name only (`SIGKILL`).
        let sig = match self.personality {
            Personality::Tini => value
                .strip_prefix("SIG")
                .filter(|n| n.bytes().all(|b| b.is_ascii_uppercase()))
                .and_then(signals::parse),
            _ => signals::parse(value),
        };
        match sig {
            Some(sig) => {
                self.init.parent_death_signal = Some(sig);
                Ok(())
            }
            None if self.personality == Personality::Tini => Err(self.tini_invalid('p', value)),
            None => Err(self.bad(&format!("invalid signal `{value}`"))),
        }
    }

    /// tini's refusal of a value, a FATAL line without the usage.
    fn tini_invalid(&self, opt: char, value: &str) -> Printout {
        Printout {
            text: format!(
                "[FATAL tini ({})] Not a valid option for -{opt}: {value}\n",
                // SAFETY: getpid has no preconditions.
                unsafe { libc::getpid() }
            ),
            stream: Stream::Stderr,
            code: 1,
        }
    }

    fn version(&self) -> Printout {
        let (text, stream) = match self.personality {
            // `docker info` parses "tini version X - git.COMMIT".
            Personality::Tini => (
                "tini version 0.19.0 - git.cradle\n".to_string(),
                Stream::Stdout,
            ),
            Personality::DumbInit => ("dumb-init v1.2.5\n".to_string(), Stream::Stderr),
            // catatonit says "tini version" too, for the same parsers.
            Personality::Catatonit => {
                ("tini version 0.1.7_catatonit\n".to_string(), Stream::Stdout)
            }
            Personality::Cradle => (
                format!("{} (cradle) {VERSION}\n", self.name),
                Stream::Stdout,
            ),
        };
        Printout {
            text,
            stream,
            code: 0,
        }
    }

    fn usage(&self) -> String {
        let name = &self.name;
        match self.personality {
            Personality::Tini => format!(
                "{name} (tini version 0.19.0 - git.cradle)\n\
                 Usage: {name} [OPTIONS] PROGRAM -- [ARGS] | --version\n\n\
                 Execute a program under the supervision of a valid init process ({name})\n\n\
                 Command line options:\n\n\
                 \x20 --version: Show version and exit.\n\
                 \x20 -h: Show this help message and exit.\n\
                 \x20 -s: Register as a process subreaper (requires Linux >= 3.4).\n\
                 \x20 -p SIGNAL: Trigger SIGNAL when parent dies, e.g. \"-p SIGKILL\".\n\
                 \x20 -v: Generate more verbose output. Repeat up to 3 times.\n\
                 \x20 -w: Print a warning when processes are getting reaped.\n\
                 \x20 -g: Send signals to the child's process group.\n\
                 \x20 -e EXIT_CODE: Remap EXIT_CODE (from 0 to 255) to 0.\n\
                 \x20 -l: Show license and exit.\n\n\
                 Environment variables:\n\n\
                 \x20 TINI_SUBREAPER: Register as a process subreaper (requires Linux >= 3.4).\n\
                 \x20 TINI_VERBOSITY: Set the verbosity level (default: 1).\n\
                 \x20 TINI_KILL_PROCESS_GROUP: Send signals to the child's process group.\n\n"
            ),
            // dumb-init names itself by argv[0] as given, path and all.
            Personality::DumbInit => format!(
                "dumb-init v1.2.5\n\
                 Usage: {} [option] command [[arg] ...]\n\n\
                 dumb-init is a simple process supervisor that forwards signals to children.\n\
                 It is designed to run as PID1 in minimal container environments.\n\n\
                 Optional arguments:\n\
                 \x20  -c, --single-child   Run in single-child mode.\n\
                 \x20                       In this mode, signals are only proxied to the\n\
                 \x20                       direct child and not any of its descendants.\n\
                 \x20  -r, --rewrite s:r    Rewrite received signal s to new signal r before proxying.\n\
                 \x20                       To ignore (not proxy) a signal, rewrite it to 0.\n\
                 \x20                       This option can be specified multiple times.\n\
                 \x20  -v, --verbose        Print debugging information to stderr.\n\
                 \x20  -h, --help           Print this help message and exit.\n\
                 \x20  -V, --version        Print the current version and exit.\n\n\
                 Full help is available online at https://github.com/Yelp/dumb-init\n",
                self.argv0
            ),
            Personality::Catatonit => format!(
                "{}\n\
                 options:\n\
                 \x20 -g              Forward signals to pid1's process group.\n\
                 \x20 -h              Print this help page.\n\
                 \x20 -L              Print license information.\n\
                 \x20 -P              Run in pause mode (no program is run and quit on SIGINT).\n\
                 \x20 -V, --version   Print version information.\n\n\
                 The source code can be found at <https://github.com/openSUSE/catatonit/>.\n\
                 For bug reporting instructions, please see: <https://bugs.opensuse.org/>.\n",
                self.catatonit_usage()
            ),
            Personality::Cradle => format!(
                "usage: {name} [OPTIONS] [--] CMD [ARGS...]\n\n\
                 Runs CMD as the child of a minimal PID 1: mounts /proc when missing, reaps\n\
                 zombies, forwards signals, and exits with CMD's status (128+N if killed by\n\
                 signal N, 127/126 if it cannot be run).\n\n\
                 options:\n\
                 \x20 -g               forward signals to CMD's process group\n\
                 \x20 -s               register as a subreaper (the default when not PID 1)\n\
                 \x20 -p SIG           get SIG when the parent dies\n\
                 \x20 -e CODE          exit 0 when CMD exits with CODE (repeatable)\n\
                 \x20 -r, --rewrite S:R  forward signal S as R, R=0 drops it (repeatable)\n\
                 \x20 -c, --single-child  no session of its own for CMD (with DUMB_INIT_SETSID=1)\n\
                 \x20 --grace SECS     on exit or stop: SIGTERM the rest, SIGKILL after SECS\n\
                 \x20 -P               pause: run no CMD, reap, exit 0 on SIGINT/SIGTERM\n\
                 \x20 -v               more output (repeatable); -w warn when reaping zombies\n\
                 \x20 -h, --help       this help; -V, --version the version; -l the license\n\n\
                 environment: CRADLE_GRACE=SECS, CRADLE_LOG=error|warn|info|debug|trace,\n\
                 TINI_SUBREAPER, TINI_KILL_PROCESS_GROUP, TINI_VERBOSITY, DUMB_INIT_SETSID,\n\
                 DUMB_INIT_DEBUG.\n\n\
                 Invoked as tini or docker-init, dumb-init, catatonit or podman-init, it\n\
                 behaves as that init.\n"
            ),
        }
    }

    /// catatonit's one-line usage, printed after its errors.
    fn catatonit_usage(&self) -> String {
        format!(
            "usage: {} [-ghLPV] [--] <progname> [<arguments>...]\n",
            self.name
        )
    }

    fn help(&self) -> Printout {
        let stream = match self.personality {
            Personality::DumbInit | Personality::Catatonit => Stream::Stderr,
            _ => Stream::Stdout,
        };
        Printout {
            text: self.usage(),
            stream,
            code: 0,
        }
    }

    fn license(&self) -> Printout {
        Printout {
            text: format!(
                "{} (cradle) {VERSION} is licensed under MIT OR Apache-2.0.\n",
                self.name
            ),
            stream: Stream::Stdout,
            code: 0,
        }
    }

    fn missing_program(&self) -> Printout {
        let text = match self.personality {
            Personality::Tini => self.usage(),
            Personality::DumbInit => {
                format!(
                    "Usage: {0} [option] program [args]\nTry {0} --help for full usage.\n",
                    self.argv0
                )
            }
            Personality::Catatonit => format!(
                "ERROR (catatonit:{}): missing program name\n{}",
                // SAFETY: getpid has no preconditions.
                unsafe { libc::getpid() },
                self.catatonit_usage()
            ),
            Personality::Cradle => format!("{}: no command given\n\n{}", self.name, self.usage()),
        };
        Printout {
            text,
            stream: Stream::Stderr,
            code: 1,
        }
    }

    /// An option that does not exist, said as getopt would (or as we do).
    fn unknown(&self, opt: &str) -> Printout {
        match self.personality {
            Personality::Cradle => Printout {
                text: format!("{}: unknown option `{opt}`\n\n{}", self.name, self.usage()),
                stream: Stream::Stderr,
                code: 1,
            },
            _ => self.getopt_error(&format!(
                "invalid option -- '{}'",
                opt.strip_prefix('-').unwrap_or(opt)
            )),
        }
    }

    /// getopt's complaint (`argv[0]: text`), then what the original prints
    /// after it: tini its usage, catatonit its usage line, dumb-init nothing.
    fn getopt_error(&self, text: &str) -> Printout {
        let after = match self.personality {
            Personality::Tini => self.usage(),
            Personality::Catatonit => self.catatonit_usage(),
            _ => String::new(),
        };
        Printout {
            text: format!("{}: {text}\n{after}", self.argv0),
            stream: Stream::Stderr,
            code: 1,
        }
    }

    fn bad(&self, what: &str) -> Printout {
        Printout {
            text: format!("{}: {what}\n", self.name),
            stream: Stream::Stderr,
            code: 1,
        }
    }
}

/// Seconds, whole or with up to nine decimals: `10`, `0.5`. Parsed by
/// hand: float parsing would add 15 KB to the static binary.
fn parse_secs(text: &str) -> Option<Duration> {
    let (whole, frac) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(frac.is_empty() || digits(frac) && frac.len() <= 9) {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        frac.parse::<u32>().ok()? * 10u32.pow(9 - frac.len() as u32)
    };
    Some(Duration::new(whole.parse().ok()?, nanos))
}

/// A number as strtol(3) and scanf's `%d` read it: leading blanks, a sign,
/// decimal digits; the rest of the text after it. None without digits.
fn scan_int(text: &str) -> Option<(i64, &str)> {
    let b = text.as_bytes();
    let mut i = b
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t'..=b'\r'))
        .count();
    let negative = b.get(i) == Some(&b'-');
    if matches!(b.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
    let start = i;
    let mut n: i64 = 0;
    while let Some(d @ b'0'..=b'9') = b.get(i) {
        n = n.saturating_mul(10).saturating_add(i64::from(d - b'0'));
        i += 1;
    }
    if i == start {
        return None;
    }
    Some((if negative { -n } else { n }, text.get(i..).unwrap_or("")))
}

/// dumb-init's `-r S:R`, read as `sscanf("%d:%d")` reads it: anything may
/// follow R.
fn scan_rewrite(text: &str) -> Option<(i32, i32)> {
    let (from, rest) = scan_int(text)?;
    let (to, _) = scan_int(rest.strip_prefix(':')?)?;
    Some((i32::try_from(from).ok()?, i32::try_from(to).ok()?))
}

/// Bytes as text, invalid UTF-8 replaced.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A verbosity from a level name or number.
fn parse_level(text: &str) -> Option<u8> {
    match text.trim().to_ascii_lowercase().as_str() {
        "error" | "quiet" => Some(0),
        "warn" | "warning" => Some(1),
        "info" => Some(2),
        "debug" => Some(3),
        "trace" => Some(4),
        n => n.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], env: &[(&str, &str)]) -> Init {
        let env: Vec<(String, Vec<u8>)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        match parse(argv, |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })
        .unwrap()
        {
            Invocation::Run(init) => *init,
            Invocation::Print(p) => panic!("expected a run, got {p:?}"),
        }
    }

    fn print(argv: &[&str]) -> Printout {
        match parse(argv, |_| None).unwrap() {
            Invocation::Print(p) => p,
            Invocation::Run(init) => panic!("expected a printout, got {init:?}"),
        }
    }

    fn argv(init: &Init) -> Vec<String> {
        init.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn stops_at_first_non_option_and_first_double_dash() {
        let init = run(&["init", "-g", "sh", "-c", "exit 3"], &[]);
        assert!(init.forward_to_group);
        assert_eq!(argv(&init), ["sh", "-c", "exit 3"]);
        let init = run(&["init", "--", "sh", "--", "-g"], &[]);
        assert!(!init.forward_to_group);
        assert_eq!(argv(&init), ["sh", "--", "-g"]);
    }

    #[test]
    fn reads_tini_flags_in_clusters() {
        let init = run(
            &[
                "tini", "-svvw", "-e", "3", "-e4", "-p", "SIGKILL", "--", "x",
            ],
            &[],
        );
        assert!(init.subreaper && init.warn_on_reap);
        assert_eq!(init.verbosity, 3);
        assert_eq!(init.remap_to_zero, [3, 4]);
        assert_eq!(init.parent_death_signal, Some(9));
        assert_eq!(init.personality, Personality::Tini);
    }

    #[test]
    fn personality_defaults_differ() {
        let tini = run(&["/usr/bin/docker-init", "x"], &[]);
        assert!(!tini.subreaper && tini.own_group && !tini.new_session);
        let dumb = run(&["dumb-init", "x"], &[]);
        assert!(!dumb.subreaper && dumb.new_session && dumb.verbosity == 0);
        assert_eq!(signals::rewrite(&dumb, libc::SIGTSTP), Some(libc::SIGSTOP));
        let cat = run(&["podman-init", "x"], &[]);
        assert!(cat.subreaper && cat.own_group);
        let own = run(&["cradle-init", "x"], &[]);
        assert!(own.subreaper && own.own_group && own.mount_proc && own.verbosity == 1);
    }

    #[test]
    fn reads_environment_variables() {
        let tini = run(
            &["tini", "x"],
            &[
                ("TINI_SUBREAPER", ""),
                ("TINI_KILL_PROCESS_GROUP", "1"),
                ("TINI_VERBOSITY", "3"),
            ],
        );
        assert!(tini.subreaper && tini.forward_to_group);
        assert_eq!(tini.verbosity, 3);
        let dumb = run(
            &["dumb-init", "x"],
            &[("DUMB_INIT_SETSID", "0"), ("DUMB_INIT_DEBUG", "1")],
        );
        assert!(!dumb.new_session);
        assert_eq!(dumb.verbosity, 3);
        assert_eq!(signals::rewrite(&dumb, libc::SIGTSTP), Some(libc::SIGTSTP));
        let own = run(
            &["init", "x"],
            &[("CRADLE_GRACE", "1.5"), ("CRADLE_LOG", "debug")],
        );
        assert_eq!(own.grace, Some(Duration::from_millis(1500)));
        assert_eq!(own.verbosity, 3);
        let flag = run(&["init", "--grace=2", "x"], &[("CRADLE_GRACE", "9")]);
        assert_eq!(flag.grace, Some(Duration::from_secs(2)));
    }

    #[test]
    fn dumb_init_rewrites_and_single_child() {
        let dumb = run(
            &["dumb-init", "-r", "15:2", "--rewrite=1:0", "-c", "x"],
            &[],
        );
        assert_eq!(signals::rewrite(&dumb, 15), Some(2));
        assert_eq!(signals::rewrite(&dumb, 1), None);
        assert!(!dumb.new_session);
    }

    #[test]
    fn versions_go_where_each_init_puts_them() {
        let tini = print(&["docker-init", "--version"]);
        assert_eq!(
            (tini.text.as_str(), tini.stream, tini.code),
            ("tini version 0.19.0 - git.cradle\n", Stream::Stdout, 0)
        );
        assert_eq!(print(&["dumb-init", "-V"]).stream, Stream::Stderr);
        assert_eq!(
            print(&["catatonit", "--version"]).text,
            "tini version 0.1.7_catatonit\n"
        );
        assert_eq!(print(&["tini", "-V"]).code, 1);
        assert!(print(&["init", "-V"]).text.contains("(cradle)"));
    }

    #[test]
    fn missing_program_is_a_usage_error() {
        for name in ["init", "tini", "dumb-init", "catatonit"] {
            let out = print(&[name]);
            assert_eq!((out.stream, out.code), (Stream::Stderr, 1), "{name}");
        }
        assert!(print(&["catatonit"]).text.contains("missing program name"));
        let pause = run(&["catatonit", "-P"], &[]);
        assert!(pause.pause);
    }

    #[test]
    fn parses_seconds_without_floats() {
        assert_eq!(parse_secs("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_secs("0.25"), Some(Duration::from_millis(250)));
        assert_eq!(parse_secs("1.5.0"), None);
        assert_eq!(parse_secs("-1"), None);
        assert_eq!(parse_secs(""), None);
    }

    #[test]
    fn refuses_bad_values() {
        assert_eq!(print(&["init", "--grace", "soon", "x"]).code, 1);
        assert_eq!(print(&["init", "-e", "300", "x"]).code, 1);
        assert_eq!(print(&["init", "-p", "SIGNOPE", "x"]).code, 1);
        assert_eq!(print(&["init", "-r", "15", "x"]).code, 1);
        assert!(
            print(&["init", "-Z", "x"])
                .text
                .starts_with("init: unknown option `-Z`")
        );
        assert!(
            print(&["tini", "-Z", "x"])
                .text
                .starts_with("tini: invalid option -- 'Z'")
        );
    }

    #[test]
    fn personalities_take_only_their_originals_options() {
        for argv in [
            &["tini", "-P", "--", "x"][..],
            &["tini", "-c", "--", "x"],
            &["tini", "--grace", "1", "--", "x"],
            &["tini", "-s", "--version"],
            &["tini", "-:", "x"],
            &["dumb-init", "-g", "x"],
            &["dumb-init", "--grace=1", "x"],
            &["dumb-init", "--ve", "x"],
            &["catatonit", "-s", "--", "x"],
            &["catatonit", "--help"],
        ] {
            assert_eq!(print(argv).code, 1, "{argv:?}");
        }
        let dumb = run(&["dumb-init", "--sing", "--rew", "15:2", "-r3:4", "x"], &[]);
        assert!(!dumb.new_session);
        assert_eq!(signals::rewrite(&dumb, 15), Some(2));
        assert_eq!(signals::rewrite(&dumb, 3), Some(4));
        assert!(run(&["catatonit", "-gP"], &[]).pause);
    }

    #[test]
    fn reads_values_as_the_originals_do() {
        // dumb-init: sscanf("%d:%d"), signals 1 to 31.
        for (value, ok) in [
            ("15:2", true),
            (" +3: 4x", true),
            ("1:0", true),
            ("31:31", true),
            ("32:1", false),
            ("1:32", false),
            ("0:1", false),
            ("3 :4", false),
            ("15:", false),
            (":2", false),
        ] {
            let out = parse(&["dumb-init", "-r", value, "x"], |_| None).unwrap();
            assert_eq!(matches!(out, Invocation::Run(_)), ok, "-r {value}");
        }
        // tini: strtol for -e, full SIGNAMEs for -p.
        for (args, ok) in [
            (&["-e", " 4"][..], true),
            (&["-e", "255"], true),
            (&["-e", "256"], false),
            (&["-e", "3x"], false),
            (&["-e", "-1"], false),
            (&["-p", "SIGKILL"], true),
            (&["-p", "KILL"], false),
            (&["-p", "sigkill"], false),
            (&["-p", "9"], false),
        ] {
            let argv: Vec<&str> = ["tini"]
                .iter()
                .chain(args)
                .chain(&["--", "x"])
                .copied()
                .collect();
            let out = parse(&argv, |_| None).unwrap();
            assert_eq!(matches!(out, Invocation::Run(_)), ok, "{args:?}");
        }
        assert!(
            print(&["tini", "-e", "3x", "x"])
                .text
                .ends_with("] Not a valid option for -e: 3x\n")
        );
    }
}
