//! Project chores, run as `cargo xtask <task>` (alias in .cargo/config.toml).
//! `main` only dispatches; each task is a module of its own.

mod bench;
mod build_image;
mod build_init;
mod build_launcher;
mod build_probe;
mod test;
mod util;
mod vm_test;

use anyhow::{Result, bail};

const USAGE: &str = "\
usage: cargo xtask <task>

tasks:
  build-init            build the static init (musl) and check it is static
  build-launcher        build the static launcher (musl) into target/static
  build-probe           build the static test probe
  build-image [NAME]    build the static init, then images/NAME (default: default)
  bench init|unpack|build|run|supervise
                        measure against tini, dumb-init, catatonit, GNU tar, crun, runc, s6, supervisord, buildah
  test [ARGS…]          build every artifact the tests need, then `cargo test --workspace ARGS…`
  vm-test               run the launcher's end-to-end checks in a cgroup v2 guest (QEMU)
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(err) = run(&args) {
        eprintln!("xtask: {err:#}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<()> {
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => bail!("no task given\n\n{USAGE}"),
    };
    match task {
        "build-init" => build_init::run(rest).map(drop),
        "build-launcher" => build_launcher::run(rest).map(drop),
        "build-probe" => build_probe::run(rest).map(drop),
        "build-image" => build_image::run(rest).map(drop),
        "bench" => bench::run(rest),
        "test" => test::run(rest),
        "vm-test" => vm_test::run(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown task `{other}`\n\n{USAGE}"),
    }
}
