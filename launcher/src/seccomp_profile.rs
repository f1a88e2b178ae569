//! `--security-opt seccomp=PROFILE.json`: loads a profile in docker's format
//! (`defaultAction`, `defaultErrnoRet`, `syscalls[{names, action, args,
//! errnoRet, includes, excludes}]`) and compiles it with seccompiler; and
//! the default profile widened for added capabilities, as docker's own
//! profile grants `mount` & co. to CAP_SYS_ADMIN.
//!
//! seccompiler gives a filter one action on a match. A profile with several
//! actions becomes stacked filters: the first lets every syscall a rule
//! names (with the rule's argument conditions) through and gives the rest
//! the default action; then one filter per other action returns it for its
//! rules and allows the rest. The kernel runs them all and keeps the most
//! restrictive result (seccomp(2), "Filter return values"), so a syscall no
//! rule matches gets the default action and one a rule matches gets that
//! rule's action.

use crate::sys::Cap;
use crate::{Error, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

/// The largest profile read; docker's default is some 20 KB.
const MAX_PROFILE: u64 = 4 << 20;

/// One rule, its names resolved to this architecture's syscall numbers.
#[derive(Debug, Clone)]
struct Resolved {
    numbers: Vec<i64>,
    action: SeccompAction,
    /// All must hold; none: any arguments.
    conditions: Vec<Cond>,
}

/// A profile, selected for the container's capabilities.
#[derive(Debug, Clone)]
struct Profile {
    default: SeccompAction,
    rules: Vec<Resolved>,
}

/// The filters of the profile at `path`, in the order to install them, for
/// a workload with `caps` (a rule's `includes.caps` and `excludes.caps`).
pub fn load(path: &Path, caps: &[Cap]) -> Result<Vec<BpfProgram>> {
    use std::io::Read;
    let fail = |why: String| Error::SeccompProfile {
        path: path.to_path_buf(),
        why,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PROFILE + 1).read_to_string(&mut text))
        .map_err(|e| fail(e.to_string()))?;
    if text.len() as u64 > MAX_PROFILE {
        return Err(fail("larger than 4 MiB".into()));
    }
    let json: Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let profile = parse(&json, caps, &kernel_version()).map_err(fail)?;
    compile(&profile).map_err(|e| fail(e.to_string()))
}

/// The default profile ([`crate::seccomp`]) with what docker's grants the
/// capabilities in `caps` beyond its default set; None when `caps` adds
/// none of those (the default profile then applies as it is).
pub fn widened_default(caps: &[Cap]) -> Result<Option<Vec<BpfProgram>>> {
    use crate::seccomp::{AF_VSOCK, ALLOWED, CLONE_NAMESPACES, PERSONAS};
    let extra: Vec<i64> = CAP_SYSCALLS
        .iter()
        .filter(|(cap, _)| caps.contains(cap))
        .flat_map(|(_, nrs)| nrs.iter().copied())
        .collect();
    if extra.is_empty() {
        return Ok(None);
    }
    let sys_admin = caps.contains(&21);
    let cond = |arg, len, op, value| Cond::new(arg, len, op, value).map_err(Error::Seccomp);
    let allow = |numbers: Vec<i64>, conditions| Resolved {
        numbers,
        action: SeccompAction::Allow,
        conditions,
    };
    let mut rules = vec![
        allow(ALLOWED.iter().chain(&extra).copied().collect(), vec![]),
        allow(
            vec![libc::SYS_socket],
            vec![cond(0, Len::Qword, Op::Ne, AF_VSOCK)?],
        ),
    ];
    for &p in PERSONAS {
        rules.push(allow(
            vec![libc::SYS_personality],
            vec![cond(0, Len::Dword, Op::Eq, p)?],
        ));
    }
    if sys_admin {
        rules.push(allow(vec![libc::SYS_clone, libc::SYS_clone3], vec![]));
    } else {
        rules.push(allow(
            vec![libc::SYS_clone],
            vec![cond(0, Len::Qword, Op::MaskedEq(CLONE_NAMESPACES), 0)?],
        ));
        rules.push(Resolved {
            numbers: vec![libc::SYS_clone3],
            action: SeccompAction::Errno(libc::ENOSYS as u32),
            conditions: vec![],
        });
    }
    let profile = Profile {
        default: SeccompAction::Errno(libc::EPERM as u32),
        rules,
    };
    compile(&profile).map(Some).map_err(Error::Seccomp)
}

/// Docker's default profile allows these beyond the plain list when the
/// container has the capability (moby `profiles/seccomp/default.json`,
/// `includes.caps`), for x86_64.
const CAP_SYSCALLS: &[(Cap, &[i64])] = &[
    (2, &[libc::SYS_open_by_handle_at]), // DAC_READ_SEARCH
    (
        21, // SYS_ADMIN
        &[
            libc::SYS_bpf,
            libc::SYS_fanotify_init,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fsopen,
            libc::SYS_fspick,
            libc::SYS_lookup_dcookie,
            libc::SYS_mount,
            libc::SYS_mount_setattr,
            libc::SYS_move_mount,
            libc::SYS_open_tree,
            libc::SYS_perf_event_open,
            libc::SYS_quotactl,
            libc::SYS_quotactl_fd,
            libc::SYS_setdomainname,
            libc::SYS_sethostname,
            libc::SYS_setns,
            libc::SYS_syslog,
            libc::SYS_umount2,
            libc::SYS_unshare,
        ],
    ),
    (22, &[libc::SYS_reboot]), // SYS_BOOT
    (
        16,
        &[
            libc::SYS_delete_module,
            libc::SYS_init_module,
            libc::SYS_finit_module,
        ],
    ), // SYS_MODULE
    (20, &[libc::SYS_acct]),   // SYS_PACCT
    (
        19, // SYS_PTRACE
        &[
            libc::SYS_kcmp,
            libc::SYS_pidfd_getfd,
            libc::SYS_process_madvise,
        ],
    ),
    (17, &[libc::SYS_iopl, libc::SYS_ioperm]), // SYS_RAWIO
    (25, &[libc::SYS_settimeofday, libc::SYS_clock_settime]), // SYS_TIME
    (26, &[libc::SYS_vhangup]),                // SYS_TTY_CONFIG
    (
        23, // SYS_NICE
        &[
            libc::SYS_get_mempolicy,
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
        ],
    ),
    (34, &[libc::SYS_syslog]),          // SYSLOG
    (39, &[libc::SYS_bpf]),             // BPF
    (38, &[libc::SYS_perf_event_open]), // PERFMON
];

/// Docker's name for this architecture in `includes.arches`.
const ARCH: &str = if cfg!(target_arch = "aarch64") {
    "arm64"
} else {
    "amd64"
};

fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release).unwrap_or((0, 0))
}

fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The profile in `json` with the rules that apply to `caps` on `kernel`.
fn parse(json: &Value, caps: &[Cap], kernel: &(u32, u32)) -> Result<Profile, String> {
    let top = json.as_object().ok_or("not a JSON object")?;
    let default_errno = match top.get("defaultErrnoRet") {
        None | Some(Value::Null) => libc::EPERM as u32,
        Some(v) => errno_value(v, "defaultErrnoRet")?,
    };
    let default = action(
        top.get("defaultAction")
            .and_then(Value::as_str)
            .ok_or("`defaultAction` is missing or not a string")?,
        default_errno,
    )?;
    if let Some(arches) = top.get("architectures")
        && !arches.is_null()
        && !arches.is_array()
    {
        return Err("`architectures` is not a list".into());
    }
    let mut rules = Vec::new();
    let syscalls = match top.get("syscalls") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(_) => return Err("`syscalls` is not a list".into()),
    };
    for (i, entry) in syscalls.iter().enumerate() {
        let at = |why: String| format!("syscalls[{i}]: {why}");
        let entry = entry
            .as_object()
            .ok_or_else(|| at("not an object".into()))?;
        if !applies(entry, caps, kernel).map_err(at)? {
            continue;
        }
        let mut names: Vec<&str> = Vec::new();
        if let Some(name) = entry.get("name").and_then(Value::as_str) {
            names.push(name);
        }
        match entry.get("names") {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for n in list {
                    names.push(
                        n.as_str()
                            .ok_or_else(|| at("a name is not a string".into()))?,
                    );
                }
            }
            Some(_) => return Err(at("`names` is not a list".into())),
        }
        let errno = match entry.get("errnoRet") {
            None | Some(Value::Null) => default_errno,
            Some(v) => errno_value(v, "errnoRet").map_err(at)?,
        };
        let act = action(
            entry
                .get("action")
                .and_then(Value::as_str)
                .ok_or_else(|| at("`action` is missing".into()))?,
            errno,
        )
        .map_err(at)?;
        let conditions = match entry.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(args)) => args
                .iter()
                .map(condition)
                .collect::<Result<_, _>>()
                .map_err(at)?,
            Some(_) => return Err(at("`args` is not a list".into())),
        };
        // Names this architecture does not have (the 32-bit ones, newer
        // syscalls) are skipped, as libseccomp does.
        let numbers = names
            .iter()
            .filter_map(|n| syscalls::Sysno::from_str(n).ok())
            .map(|s| s.id() as i64)
            .collect::<Vec<_>>();
        if !numbers.is_empty() {
            rules.push(Resolved {
                numbers,
                action: act,
                conditions,
            });
        }
    }
    Ok(Profile { default, rules })
}

/// Whether an entry's `includes` and `excludes` let it apply (moby's
/// rules): every included capability held, none excluded held, the
/// architecture included and not excluded, the kernel at least `minKernel`.
fn applies(
    entry: &serde_json::Map<String, Value>,
    caps: &[Cap],
    kernel: &(u32, u32),
) -> Result<bool, String> {
    let list = |part: &str, key: &str| -> Result<Vec<String>, String> {
        match entry.get(part).and_then(|p| p.get(key)) {
            None | Some(Value::Null) => Ok(vec![]),
            Some(Value::Array(v)) => v
                .iter()
                .map(|s| {
                    s.as_str()
                        .map(str::to_string)
                        .ok_or(format!("`{part}.{key}` holds a non-string"))
                })
                .collect(),
            Some(_) => Err(format!("`{part}.{key}` is not a list")),
        }
    };
    let held = |name: &String| -> Result<bool, String> {
        crate::capabilities::number(name)
            .map(|c| caps.contains(&c))
            .ok_or(format!("unknown capability `{name}`"))
    };
    for name in list("excludes", "caps")? {
        if held(&name)? {
            return Ok(false);
        }
    }
    for name in list("includes", "caps")? {
        if !held(&name)? {
            return Ok(false);
        }
    }
    if list("excludes", "arches")?.iter().any(|a| a == ARCH) {
        return Ok(false);
    }
    let arches = list("includes", "arches")?;
    if !arches.is_empty() && !arches.iter().any(|a| a == ARCH) {
        return Ok(false);
    }
    if let Some(min) = entry
        .get("includes")
        .and_then(|p| p.get("minKernel"))
        .and_then(Value::as_str)
    {
        let min = parse_version(min).ok_or(format!("`minKernel` `{min}` is not a version"))?;
        if *kernel < min {
            return Ok(false);
        }
    }
    Ok(true)
}

fn errno_value(v: &Value, key: &str) -> Result<u32, String> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(format!("`{key}` is not an errno number"))
}

/// libseccomp's action names, as docker writes them.
fn action(name: &str, errno: u32) -> Result<SeccompAction, String> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => SeccompAction::Allow,
        "SCMP_ACT_ERRNO" => SeccompAction::Errno(errno),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => SeccompAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => SeccompAction::KillProcess,
        "SCMP_ACT_TRAP" => SeccompAction::Trap,
        "SCMP_ACT_LOG" => SeccompAction::Log,
        "SCMP_ACT_TRACE" => SeccompAction::Trace(errno),
        other => return Err(format!("unsupported action `{other}`")),
    })
}

/// One `args` entry: `{index, value, valueTwo, op}`; with
/// `SCMP_CMP_MASKED_EQ`, `value` is the mask and `valueTwo` the datum.
fn condition(arg: &Value) -> Result<Cond, String> {
    let number = |key: &str| -> Result<u64, String> {
        match arg.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(v) => v.as_u64().ok_or(format!("`{key}` is not a number")),
        }
    };
    let index = number("index")?;
    let index = u8::try_from(index)
        .ok()
        .filter(|i| *i < 6)
        .ok_or(format!("argument index {index} is past the sixth"))?;
    let (value, two) = (number("value")?, number("valueTwo")?);
    let op = arg.get("op").and_then(Value::as_str).unwrap_or_default();
    let (op, datum) = match op {
        "SCMP_CMP_NE" => (Op::Ne, value),
        "SCMP_CMP_LT" => (Op::Lt, value),
        "SCMP_CMP_LE" => (Op::Le, value),
        "SCMP_CMP_EQ" => (Op::Eq, value),
        "SCMP_CMP_GE" => (Op::Ge, value),
        "SCMP_CMP_GT" => (Op::Gt, value),
        "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq(value), two),
        other => return Err(format!("unknown argument operator `{other}`")),
    };
    Cond::new(index, Len::Qword, op, datum).map_err(|e| e.to_string())
}

/// Syscall number → its rules, where an empty list means "whatever the
/// arguments" (seccompiler's convention).
type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn add(rules: &mut Rules, r: &Resolved) -> Result<(), seccompiler::BackendError> {
    for &nr in &r.numbers {
        let unconditional = rules.get(&nr).is_some_and(|v| v.is_empty());
        if r.conditions.is_empty() {
            rules.insert(nr, vec![]);
        } else if !unconditional {
            let rule = SeccompRule::new(r.conditions.clone())?;
            rules.entry(nr).or_default().push(rule);
        }
    }
    Ok(())
}

fn arch() -> seccompiler::TargetArch {
    #[cfg(target_arch = "aarch64")]
    return seccompiler::TargetArch::aarch64;
    #[cfg(not(target_arch = "aarch64"))]
    seccompiler::TargetArch::x86_64
}

/// The stacked filters of `profile` (see the module's notes).
fn compile(profile: &Profile) -> Result<Vec<BpfProgram>, seccompiler::BackendError> {
    let mut union = Rules::new();
    let mut groups: Vec<(SeccompAction, Rules)> = Vec::new();
    for r in &profile.rules {
        add(&mut union, r)?;
        if r.action == SeccompAction::Allow {
            continue;
        }
        let at = match groups.iter().position(|(a, _)| *a == r.action) {
            Some(at) => at,
            None => {
                groups.push((r.action.clone(), Rules::new()));
                groups.len() - 1
            }
        };
        add(&mut groups[at].1, r)?;
    }
    let mut filters = Vec::new();
    if profile.default != SeccompAction::Allow {
        let first =
            SeccompFilter::new(union, profile.default.clone(), SeccompAction::Allow, arch())?;
        filters.push(first.try_into()?);
    }
    for (action, rules) in groups {
        let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch())?;
        filters.push(filter.try_into()?);
    }
    Ok(filters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn numbers(p: &Profile) -> Vec<Vec<i64>> {
        p.rules.iter().map(|r| r.numbers.clone()).collect()
    }

    #[test]
    fn includes_and_excludes_select_rules_by_capability_arch_and_kernel() {
        let json = json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [
                {"names": ["read", "socketcall"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
                {"names": ["iopl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["s390x"]}},
            ]
        });
        let p = parse(&json, &[0], &(6, 1)).unwrap();
        assert_eq!(p.default, SeccompAction::Errno(libc::EPERM as u32));
        // socketcall has no x86_64 number: skipped.
        assert_eq!(
            numbers(&p),
            [
                vec![libc::SYS_read],
                vec![libc::SYS_clone3],
                vec![libc::SYS_ptrace]
            ]
        );
        assert_eq!(p.rules[1].action, SeccompAction::Errno(38));
        let p = parse(&json, &[21], &(4, 4)).unwrap();
        assert_eq!(numbers(&p), [vec![libc::SYS_read], vec![libc::SYS_mount]]);
        assert_eq!(compile(&p).unwrap().len(), 1);
    }

    #[test]
    fn malformed_profiles_are_refused_saying_where() {
        for (json, want) in [
            (json!([]), "not a JSON object"),
            (json!({"syscalls": []}), "`defaultAction`"),
            (
                json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
                "unsupported action `SCMP_ACT_NOTIFY`",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
                "syscalls[0]: argument index 7",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "EQ"}]}]}),
                "unknown argument operator `EQ`",
            ),
            (
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_NOPE"]}}]}),
                "unknown capability `CAP_NOPE`",
            ),
        ] {
            let err = parse(&json, &[], &(6, 1)).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn one_filter_per_action_beyond_the_default() {
        let json = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                 "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]},
            ]
        });
        let p = parse(&json, &[], &(6, 1)).unwrap();
        // Default allow: no union filter; EACCES and EPERM groups.
        assert_eq!(compile(&p).unwrap().len(), 2);
    }

    #[test]
    fn widening_happens_only_for_capabilities_that_unlock_syscalls() {
        assert!(
            widened_default(&crate::exec::DEFAULT_CAPS)
                .unwrap()
                .is_none()
        );
        let filters = widened_default(&[0, 21]).unwrap().unwrap();
        assert_eq!(filters.len(), 1);
        let filters = widened_default(&[19]).unwrap().unwrap();
        // The clone3 ENOSYS filter stays without CAP_SYS_ADMIN.
        assert_eq!(filters.len(), 2);
    }
}
