//! Fuzzing the init's command line parser with proptest: argv built from
//! every flag of every personality, their values good and bad, and garbage
//! bytes (invalid UTF-8, NUL), with the environment variables it reads. A
//! command line may be refused; a panic, or a parse running past
//! [`testkit::fuzz::DEADLINE`], fails. `CRADLE_FUZZ_CASES=N` runs N cases instead of the
//! CI's count.

use init::args::{Invocation, parse};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;
use std::collections::HashMap;

/// A case takes about 0.2 ms (most of it starting its thread): 30 000 of
/// them some 6 s.
const CASES: u32 = 30_000;

fn config() -> Config {
    let cases = testkit::fuzz::cases(CASES);
    Config {
        cases,
        // No regression files: a failure found becomes a named test.
        failure_persistence: None,
        // Shrinking a hang costs a deadline per step.
        max_shrink_time: 60_000,
        ..Config::default()
    }
}

const ARGV0: &[&[u8]] = &[
    b"init",
    b"/sbin/cradle-init",
    b"tini",
    b"/usr/bin/tini-static",
    b"docker-init",
    b"dumb-init",
    b"/usr/bin/dumb-init",
    b"catatonit",
    b"podman-init",
    b"",
    b"/",
    b"tini/",
    b"\xff\xfe",
    b"ti\0ni",
];

/// Every flag any personality knows, alone, clustered and with values
/// attached, and some that none knows.
const FLAGS: &[&[u8]] = &[
    b"-s",
    b"-g",
    b"-v",
    b"-vvv",
    b"-w",
    b"-c",
    b"-P",
    b"-h",
    b"-l",
    b"-L",
    b"-V",
    b"-p",
    b"-pSIGKILL",
    b"-pkill",
    b"-p0",
    b"-e",
    b"-e3",
    b"-e256",
    b"-e-1",
    b"-r",
    b"-r15:0",
    b"-r65:1",
    b"-r1:-1",
    b"-r:",
    b"-sgvwc",
    b"-sgp",
    b"-gP",
    b"-vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv",
    b"--rewrite",
    b"--rewrite=15:9",
    b"--rewrite=",
    b"--grace",
    b"--grace=10",
    b"--grace=0.5",
    b"--grace=1.0000000001",
    b"--grace=18446744073709551616",
    b"--grace=18446744073709551615.999999999",
    b"--grace= 1",
    b"--grace=.",
    b"--single-child",
    b"--single-child=1",
    b"--verbose",
    b"--version",
    b"--help",
    b"--license",
    b"--unknown",
    b"--=",
    b"---",
    b"--",
    b"-",
    b"-x",
    b"-\xff",
    b"--\xff=\xfe",
];

/// What follows a flag that takes a value, and workload arguments.
const VALUES: &[&[u8]] = &[
    b"SIGKILL",
    b"SIGRTMIN",
    b"term",
    b"9",
    b"0",
    b"64",
    b"65",
    b"-1",
    b"2147483648",
    b"15:0",
    b"1:64",
    b"sh",
    b"/bin/sh",
    b"",
    b"\0",
    b"a\0b",
];

const VARIABLES: &[&str] = &[
    "TINI_SUBREAPER",
    "TINI_KILL_PROCESS_GROUP",
    "TINI_VERBOSITY",
    "DUMB_INIT_SETSID",
    "DUMB_INIT_DEBUG",
    "CRADLE_GRACE",
    "CRADLE_LOG",
];

const VARIABLE_VALUES: &[&[u8]] = &[
    b"",
    b"0",
    b"1",
    b"3",
    b"255",
    b"256",
    b"-1",
    b"debug",
    b"TRACE",
    b" warn ",
    b"0.5",
    b"99999999999999999999",
    b"\xff",
];

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        5 => select(FLAGS).prop_map(<[u8]>::to_vec),
        3 => select(VALUES).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ]
}

fn argv() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop_oneof![
        // Mostly argv[0] and some arguments; rarely nothing at all, as a
        // program can be exec'd with an empty argv.
        20 => (select(ARGV0), prop::collection::vec(arg(), 0..8)).prop_map(|(argv0, rest)| {
            let mut argv = vec![argv0.to_vec()];
            argv.extend(rest);
            argv
        }),
        1 => Just(Vec::new()),
    ]
}

fn env() -> impl Strategy<Value = HashMap<String, Vec<u8>>> {
    prop::collection::hash_map(
        select(VARIABLES).prop_map(str::to_string),
        prop_oneof![
            4 => select(VARIABLE_VALUES).prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 0..8),
        ],
        0..4,
    )
}

/// Parses, and checks what came out against what can be said without
/// parsing: Err only for a NUL in an argument, a text to print that is
/// not empty, and for a command line with no option, the workload it
/// names.
fn check(argv: &[Vec<u8>], env: &HashMap<String, Vec<u8>>) -> Result<(), String> {
    let getenv = |k: &str| env.get(k).cloned();
    let parsed = parse(argv, getenv);
    let again = format!("{:?}", parse(argv, getenv));
    if format!("{parsed:?}") != again {
        return Err(format!("two parses differ: {parsed:?} and {again}"));
    }
    let args = argv.get(1..).unwrap_or_default();
    let no_options = args
        .first()
        .is_none_or(|a| !a.starts_with(b"-") || a == b"-");
    match parsed {
        Err(init::Error::NulInArgument { .. }) if args.iter().any(|a| a.contains(&0)) => Ok(()),
        Err(e) => Err(format!("refused with {e:?}")),
        Ok(Invocation::Print(out)) if out.text.is_empty() || out.code > 1 => {
            Err(format!("printout {out:?}"))
        }
        Ok(Invocation::Print(_)) if no_options && !args.is_empty() => {
            Err("a workload without options printed instead of running".into())
        }
        Ok(Invocation::Run(_)) if no_options && args.is_empty() => {
            Err("ran with no workload and no -P".into())
        }
        Ok(_) => Ok(()),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_command_line_parses_or_is_refused_without_panicking(argv in argv(), env in env()) {
        let outcome = testkit::fuzz::within_deadline(move || check(&argv, &env).map_err(|e| format!("{argv:?} {env:?}: {e}")));
        prop_assert!(outcome.is_ok(), "{}", outcome.unwrap_err());
    }
}
