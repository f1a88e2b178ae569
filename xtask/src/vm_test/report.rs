//! The checks' results: `PASS name` and `FAIL name: detail` lines of the
//! guest's console, judged against the list of checks known to fail.

/// The line the script prints after its last check.
pub const DONE: &str = "cradle-vm-test: done";

/// What one line of the console says, judged.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass {
        name: String,
    },
    Fail {
        name: String,
        detail: String,
    },
    /// Failed, and listed as known to fail: `reason` says why.
    Known {
        name: String,
        detail: String,
        reason: String,
    },
    /// Passed, though listed as known to fail: the entry can go.
    Fixed {
        name: String,
    },
}

impl Verdict {
    /// A console line's verdict; None for any other line.
    pub fn of_line(line: &str, known: &[(&str, &str)]) -> Option<Self> {
        let reason = |name: &str| {
            known
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, r)| r.to_string())
        };
        if let Some(name) = line.strip_prefix("PASS ") {
            let name = name.trim().to_string();
            return Some(match reason(&name) {
                Some(_) => Verdict::Fixed { name },
                None => Verdict::Pass { name },
            });
        }
        let rest = line.strip_prefix("FAIL ")?;
        let (name, detail) = rest.split_once(": ").unwrap_or((rest, ""));
        let (name, detail) = (name.trim().to_string(), detail.trim().to_string());
        Some(match reason(&name) {
            Some(reason) => Verdict::Known {
                name,
                detail,
                reason,
            },
            None => Verdict::Fail { name, detail },
        })
    }

    pub fn failed(&self) -> bool {
        matches!(self, Verdict::Fail { .. })
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Verdict::Pass { name } => write!(f, "PASS {name}"),
            Verdict::Fail { name, detail } => write!(f, "FAIL {name}: {detail}"),
            Verdict::Known {
                name,
                detail,
                reason,
            } => {
                write!(f, "KNOWN {name}: {detail} (known: {reason})")
            }
            Verdict::Fixed { name } => write!(
                f,
                "PASS {name} (listed in KNOWN_FAILURES of xtask/src/vm_test.rs: remove it)"
            ),
        }
    }
}

/// True when the console has the script's last line.
pub fn finished(console: &str) -> bool {
    console.lines().any(|l| l.trim() == DONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[(&str, &str)] = &[("network-host", "EBUSY")];

    #[test]
    fn judges_lines_against_the_known_failures() {
        let v = |line| Verdict::of_line(line, KNOWN);
        assert_eq!(
            v("PASS memory-oom"),
            Some(Verdict::Pass {
                name: "memory-oom".into()
            })
        );
        assert_eq!(
            v("FAIL pids-limit: forked=10 fork_errno=0"),
            Some(Verdict::Fail {
                name: "pids-limit".into(),
                detail: "forked=10 fork_errno=0".into()
            })
        );
        assert_eq!(
            v("FAIL network-host: exit 125"),
            Some(Verdict::Known {
                name: "network-host".into(),
                detail: "exit 125".into(),
                reason: "EBUSY".into()
            })
        );
        assert_eq!(
            v("PASS network-host"),
            Some(Verdict::Fixed {
                name: "network-host".into()
            })
        );
        assert_eq!(v("[    1.2] PASS x"), None);
        assert!(v("FAIL x").unwrap().failed());
    }

    #[test]
    fn the_done_line_ends_a_run() {
        assert!(finished("PASS a\r\ncradle-vm-test: done\r\n"));
        assert!(!finished("PASS a\n"));
    }
}
