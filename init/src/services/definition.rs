//! Definitions step: one service per `NAME.toml`, read into a [`Def`] and
//! checked (known keys, values of the right kind, dependencies that exist
//! and form no cycle) before anything runs. Every refusal names the file
//! and the key.

use super::toml::{self, Value};
use crate::prelude::*;
use crate::signals;
use alloc::ffi::CString;
use core::time::Duration;

/// What kind of process a service is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Runs for as long as the container; ready as its `ready` says.
    Longrun,
    /// Runs once to the end; ready (for its dependents) when it exits 0.
    Oneshot,
}

/// When a service that ended is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    Always,
    OnFailure,
    Never,
}

/// How the supervisor learns that a longrun is ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// As soon as it runs.
    Started,
    /// s6's notification-fd: a newline written to this descriptor.
    Fd(i32),
    /// systemd's sd_notify: a `READY=1` datagram on `NOTIFY_SOCKET`.
    Notify,
    /// A TCP connect to 127.0.0.1:PORT succeeds.
    Tcp(u16),
    /// This command exits 0.
    Command(Vec<CString>),
}

/// One service, as defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Def {
    pub name: String,
    /// The file it came from, for messages.
    pub file: String,
    pub command: Vec<CString>,
    pub kind: Kind,
    pub depends_on: Vec<String>,
    /// `name`, `uid` or `uid:gid`, resolved when the service starts.
    pub user: Option<String>,
    /// `KEY=VALUE` entries added to the environment.
    pub env: Vec<CString>,
    pub workdir: Option<CString>,
    pub stop_signal: i32,
    pub stop_timeout: Duration,
    pub restart: Restart,
    pub critical: bool,
    pub ready: Ready,
    /// Prefix each output line with `[name] `.
    pub log_prefix: bool,
    /// Restarts in a row (without a healthy period between) before the
    /// service is given up.
    pub restart_limit: u32,
    /// s6's `finish` script, run after each exit with the exit code and
    /// signal.
    pub finish: Option<CString>,
}

/// A refused definition: the file, the key, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub file: String,
    pub key: String,
    pub problem: String,
}

const KEYS: [&str; 14] = [
    "command",
    "type",
    "depends_on",
    "user",
    "env",
    "workdir",
    "stop_signal",
    "stop_timeout",
    "restart",
    "critical",
    "ready",
    "log_prefix",
    "restart_limit",
    "description",
];

/// The default number of restarts in a row before giving up.
pub const RESTART_LIMIT: u32 = 10;
/// The default time between the stop signal and SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Def {
    /// A longrun with the defaults, for the s6-overlay layout.
    pub fn longrun(name: &str, file: &str, command: Vec<CString>) -> Def {
        Def {
            name: name.into(),
            file: file.into(),
            command,
            kind: Kind::Longrun,
            depends_on: Vec::new(),
            user: None,
            env: Vec::new(),
            workdir: None,
            stop_signal: libc::SIGTERM,
            stop_timeout: STOP_TIMEOUT,
            restart: Restart::Always,
            critical: false,
            ready: Ready::Started,
            log_prefix: true,
            restart_limit: RESTART_LIMIT,
            finish: None,
        }
    }
}

/// Parses the definition of service `name` read from `file`.
pub fn parse(name: &str, file: &str, text: &str) -> Result<Def, Refusal> {
    let refuse = |key: &str, problem: String| Refusal {
        file: file.into(),
        key: key.into(),
        problem,
    };
    if !valid_name(name) {
        return Err(refuse(
            "",
            format!("`{name}` is no service name (letters, digits, `.`, `_`, `-`)"),
        ));
    }
    let doc = toml::parse(text).map_err(|e| {
        refuse(
            "",
            format!("line {}: not valid TOML: {}", e.line, e.message),
        )
    })?;
    let mut def = Def::longrun(name, file, Vec::new());
    def.restart = Restart::OnFailure;
    let mut restart_given = false;
    for (key, value) in &doc {
        let bad = |what: &str| refuse(key, format!("expected {what}"));
        match key.as_str() {
            "command" => {
                def.command = strings(value).ok_or_else(|| bad("an array of strings"))?;
                if def.command.is_empty() {
                    return Err(refuse(key, "is empty".into()));
                }
            }
            "type" => {
                def.kind = match value {
                    Value::Str(s) if s == "longrun" => Kind::Longrun,
                    Value::Str(s) if s == "oneshot" => Kind::Oneshot,
                    _ => return Err(bad("\"longrun\" or \"oneshot\"")),
                }
            }
            "depends_on" => {
                let deps = strings(value).ok_or_else(|| bad("an array of service names"))?;
                def.depends_on = deps
                    .iter()
                    .map(|d| d.to_string_lossy().into_owned())
                    .collect();
            }
            "user" => match value {
                Value::Str(s) if !s.is_empty() => def.user = Some(s.clone()),
                Value::Int(n) if *n >= 0 && *n <= i64::from(u32::MAX) => {
                    def.user = Some(format!("{n}"))
                }
                _ => return Err(bad("a user name or uid[:gid]")),
            },
            "env" => def.env = env(value).ok_or_else(|| bad("a table or an array of \"K=V\""))?,
            "workdir" => match value {
                Value::Str(s) if s.starts_with('/') => def.workdir = Some(cstring(s)),
                _ => return Err(bad("an absolute path")),
            },
            "stop_signal" => {
                def.stop_signal = match value {
                    Value::Str(s) => signals::parse(s),
                    Value::Int(n) => i32::try_from(*n).ok().filter(|n| (1..=64).contains(n)),
                    _ => None,
                }
                .ok_or_else(|| bad("a signal name or number"))?
            }
            "stop_timeout" => {
                def.stop_timeout = duration(value).ok_or_else(|| bad("seconds or \"N ms\""))?
            }
            "restart" => {
                restart_given = true;
                def.restart = match value {
                    Value::Str(s) if s == "always" => Restart::Always,
                    Value::Str(s) if s == "on-failure" => Restart::OnFailure,
                    Value::Str(s) if s == "never" => Restart::Never,
                    _ => return Err(bad("\"always\", \"on-failure\" or \"never\"")),
                }
            }
            "critical" => def.critical = boolean(value).ok_or_else(|| bad("true or false"))?,
            "log_prefix" => def.log_prefix = boolean(value).ok_or_else(|| bad("true or false"))?,
            "restart_limit" => {
                def.restart_limit = match value {
                    Value::Int(n) => u32::try_from(*n).ok(),
                    _ => None,
                }
                .ok_or_else(|| bad("a number of restarts"))?
            }
            "ready" => def.ready = ready(file, value)?,
            "description" => {}
            _ => {
                return Err(refuse(
                    key,
                    format!("unknown key (known: {})", KEYS.join(", ")),
                ));
            }
        }
    }
    if def.command.is_empty() {
        return Err(refuse("command", "missing".into()));
    }
    if def.kind == Kind::Oneshot {
        if !restart_given {
            def.restart = Restart::Never;
        }
        if def.ready != Ready::Started {
            return Err(refuse(
                "ready",
                "a oneshot is ready when it exits 0; it takes no `ready`".into(),
            ));
        }
    }
    Ok(def)
}

fn ready(file: &str, value: &Value) -> Result<Ready, Refusal> {
    let refuse = |key: &str, problem: &str| Refusal {
        file: file.into(),
        key: key.into(),
        problem: problem.into(),
    };
    let Value::Table(t) = value else {
        return Err(refuse(
            "ready",
            "expected a table: { fd = N }, { notify = true }, { tcp = PORT } or { command = [...] }",
        ));
    };
    let [(kind, v)] = &t[..] else {
        return Err(refuse(
            "ready",
            "expected exactly one of fd, notify, tcp, command",
        ));
    };
    match (kind.as_str(), v) {
        // 0-2 are the service's stdio.
        ("fd", Value::Int(n)) if (3..=1023).contains(n) => Ok(Ready::Fd(*n as i32)),
        ("fd", _) => Err(refuse("ready.fd", "expected a descriptor number 3-1023")),
        ("notify", Value::Bool(true)) => Ok(Ready::Notify),
        ("notify", _) => Err(refuse("ready.notify", "expected true")),
        ("tcp", Value::Int(n)) if (1..=65535).contains(n) => Ok(Ready::Tcp(*n as u16)),
        ("tcp", _) => Err(refuse("ready.tcp", "expected a port 1-65535")),
        ("command", v) => match strings(v) {
            Some(argv) if !argv.is_empty() => Ok(Ready::Command(argv)),
            _ => Err(refuse(
                "ready.command",
                "expected a non-empty array of strings",
            )),
        },
        (other, _) => Err(refuse(
            &format!("ready.{other}"),
            "unknown readiness (known: fd, notify, tcp, command)",
        )),
    }
}

/// Letters, digits, `.`, `_`, `-`; not starting with `.`: it becomes a
/// file name and a log prefix.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn cstring(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// An array of strings without NUL bytes.
fn strings(value: &Value) -> Option<Vec<CString>> {
    let Value::Array(items) = value else {
        return None;
    };
    items
        .iter()
        .map(|v| match v {
            Value::Str(s) => CString::new(s.as_str()).ok(),
            _ => None,
        })
        .collect()
}

fn boolean(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        _ => None,
    }
}

/// `{ K = "V" }` or `["K=V"]`; keys non-empty, without `=` or NUL.
fn env(value: &Value) -> Option<Vec<CString>> {
    let pairs: Vec<(String, String)> = match value {
        Value::Table(t) => t
            .iter()
            .map(|(k, v)| match v {
                Value::Str(s) => Some((k.clone(), s.clone())),
                Value::Int(n) => Some((k.clone(), format!("{n}"))),
                _ => None,
            })
            .collect::<Option<_>>()?,
        Value::Array(items) => items
            .iter()
            .map(|v| match v {
                Value::Str(s) => s.split_once('=').map(|(k, v)| (k.into(), v.into())),
                _ => None,
            })
            .collect::<Option<_>>()?,
        _ => return None,
    };
    pairs
        .into_iter()
        .map(|(k, v)| {
            if k.is_empty() || k.contains('=') {
                return None;
            }
            CString::new(format!("{k}={v}")).ok()
        })
        .collect()
}

/// Whole seconds, or a string `"N"`, `"Ns"` or `"Nms"`.
fn duration(value: &Value) -> Option<Duration> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok().map(Duration::from_secs),
        Value::Str(s) => {
            let s = s.trim();
            if let Some(ms) = s.strip_suffix("ms") {
                ms.trim().parse().ok().map(Duration::from_millis)
            } else {
                s.strip_suffix('s')
                    .unwrap_or(s)
                    .trim()
                    .parse()
                    .ok()
                    .map(Duration::from_secs)
            }
        }
        _ => None,
    }
}

/// Checks that every dependency exists and that they form no cycle, and
/// returns the services in a start order (each after what it depends on).
pub fn order(defs: &[Def]) -> Result<Vec<usize>, Refusal> {
    let index = |name: &str| defs.iter().position(|d| d.name == name);
    for def in defs {
        for dep in &def.depends_on {
            if index(dep).is_none() {
                return Err(Refusal {
                    file: def.file.clone(),
                    key: "depends_on".into(),
                    problem: format!("no service is named `{dep}`"),
                });
            }
        }
    }
    // Depth-first, with the path kept to name the cycle.
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; defs.len()];
    let mut out = Vec::with_capacity(defs.len());
    fn visit(
        defs: &[Def],
        at: usize,
        marks: &mut [Mark],
        path: &mut Vec<usize>,
        out: &mut Vec<usize>,
    ) -> Result<(), Refusal> {
        match marks[at] {
            Mark::Done => return Ok(()),
            Mark::OnPath => {
                let from = path.iter().position(|p| *p == at).unwrap_or(0);
                let mut names: Vec<&str> = path[from..]
                    .iter()
                    .map(|i| defs[*i].name.as_str())
                    .collect();
                names.push(&defs[at].name);
                return Err(Refusal {
                    file: defs[at].file.clone(),
                    key: "depends_on".into(),
                    problem: format!("dependency cycle: {}", names.join(" -> ")),
                });
            }
            Mark::New => {}
        }
        marks[at] = Mark::OnPath;
        path.push(at);
        for dep in &defs[at].depends_on {
            if let Some(d) = defs.iter().position(|x| x.name == *dep) {
                visit(defs, d, marks, path, out)?;
            }
        }
        path.pop();
        marks[at] = Mark::Done;
        out.push(at);
        Ok(())
    }
    for at in 0..defs.len() {
        visit(defs, at, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::borrow::ToOwned;

    fn def(text: &str) -> Result<Def, Refusal> {
        parse("web", "/s/web.toml", text)
    }

    #[test]
    fn reads_every_key() {
        let d = def(
            "command = [\"srv\", \"-p\"]\ntype = \"longrun\"\ndepends_on = [\"db\"]\n\
             user = \"nobody\"\nenv = { A = \"1\" }\nworkdir = \"/srv\"\nstop_signal = \"SIGINT\"\n\
             stop_timeout = \"250ms\"\nrestart = \"always\"\ncritical = true\n\
             ready = { tcp = 8080 }\nlog_prefix = false\nrestart_limit = 3\n",
        )
        .unwrap();
        assert_eq!(d.command, [c"srv".to_owned(), c"-p".to_owned()]);
        assert_eq!(d.depends_on, ["db"]);
        assert_eq!(d.env, [c"A=1".to_owned()]);
        assert_eq!(d.stop_signal, libc::SIGINT);
        assert_eq!(d.stop_timeout, Duration::from_millis(250));
        assert_eq!(
            (
                d.restart,
                d.critical,
                d.ready,
                d.log_prefix,
                d.restart_limit
            ),
            (Restart::Always, true, Ready::Tcp(8080), false, 3)
        );
        let d = def("command = [\"x\"]\ntype = \"oneshot\"\nenv = [\"B=2=3\"]\n").unwrap();
        assert_eq!((d.kind, d.restart), (Kind::Oneshot, Restart::Never));
        assert_eq!(d.env, [c"B=2=3".to_owned()]);
    }

    #[test]
    fn refuses_naming_the_key() {
        for (text, key, what) in [
            (
                "command = [\"x\"]\nrestrat = \"always\"",
                "restrat",
                "unknown key",
            ),
            ("type = \"longrun\"", "command", "missing"),
            ("command = []", "command", "empty"),
            ("command = \"x\"", "command", "array of strings"),
            ("command = [\"x\"]\ntype = \"daemon\"", "type", "longrun"),
            (
                "command = [\"x\"]\nrestart = \"sometimes\"",
                "restart",
                "always",
            ),
            (
                "command = [\"x\"]\nstop_signal = \"SIGNOPE\"",
                "stop_signal",
                "signal",
            ),
            (
                "command = [\"x\"]\nready = { fd = 1 }",
                "ready.fd",
                "3-1023",
            ),
            (
                "command = [\"x\"]\nready = { tcp = 70000 }",
                "ready.tcp",
                "port",
            ),
            (
                "command = [\"x\"]\nready = { http = 1 }",
                "ready.http",
                "unknown",
            ),
            (
                "command = [\"x\"]\nworkdir = \"rel\"",
                "workdir",
                "absolute",
            ),
            ("command = [\"x\"]\nenv = [\"NOEQUALS\"]", "env", "K=V"),
            (
                "command = [\"x\"]\ncritical = \"yes\"",
                "critical",
                "true or false",
            ),
            ("command = [\"x\"\n", "", "line 2: not valid TOML"),
        ] {
            let err = def(text).unwrap_err();
            assert_eq!(
                (err.file.as_str(), err.key.as_str()),
                ("/s/web.toml", key),
                "{text}"
            );
            assert!(err.problem.contains(what), "{text}: {err:?}");
        }
    }

    #[test]
    fn orders_by_dependency_and_names_cycles() {
        let mk = |name: &str, deps: &[&str]| {
            let mut d = Def::longrun(name, &format!("{name}.toml"), vec![c"x".to_owned()]);
            d.depends_on = deps.iter().map(|s| s.to_string()).collect();
            d
        };
        let defs = [
            mk("web", &["db", "migrate"]),
            mk("migrate", &["db"]),
            mk("db", &[]),
        ];
        assert_eq!(order(&defs).unwrap(), [2, 1, 0]);
        let defs = [mk("a", &["b"]), mk("b", &["c"]), mk("c", &["a"])];
        let err = order(&defs).unwrap_err();
        assert_eq!(err.key, "depends_on");
        assert!(err.problem.contains("a -> b -> c -> a"), "{err:?}");
        let err = order(&[mk("a", &["ghost"])]).unwrap_err();
        assert_eq!(
            (err.file.as_str(), err.key.as_str()),
            ("a.toml", "depends_on")
        );
        assert!(err.problem.contains("`ghost`"));
    }
}
