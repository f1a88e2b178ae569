//! The probe: a tiny static program run inside containers by the end-to-end
//! tests. It reports what it sees as `key=value` lines on stdout, or performs
//! one action (exit with a code, wait for a signal, make orphans, allocate).
//!
//! ```text
//! probe [report]          pid, hostname, id maps, capabilities, seccomp, mounts, netdevs
//! probe exit N            exit with status N
//! probe kill N            kill itself with signal N
//! probe wait-signal       print `ready`, wait for SIGTERM/SIGINT/SIGHUP/SIGUSR1, print `got N`, exit 0
//! probe orphans N         fork N children that leave sleeping grandchildren behind, then exit 0
//! probe zombies           print the number of zombie processes
//! probe alloc MIB         allocate and touch MIB mebibytes
//! probe read PATH         print `read PATH ok N` or `read PATH err ERRNO`
//! probe write PATH        print `write PATH ok` or `write PATH err ERRNO`
//! probe sleep MS          sleep
//! probe winsize           print `winsize ROWSxCOLS` of stdin
//! probe serve PORT [N]    listen on TCP PORT, print `ready`, answer N (1) connections with `hello from HOSTNAME`
//! probe connect ADDR PORT print the line a TCP server at ADDR:PORT sends (retrying 10s), or `connect err ERRNO`
//! probe fork N            fork up to N sleeping children, print `forked=K` and `fork_errno=E`, kill them
//! probe rawsend udp|tcp DST PORT [SRC]  an AF_PACKET frame to DST:PORT via the gateway (raw.rs)
//! probe now               print CLOCK_MONOTONIC in microseconds (busybox's date has no %N)
//! ```

mod raw;

use std::io::Write;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let num = |i: usize| arg(i).parse::<i64>().unwrap_or(0);
    match arg(0) {
        "" | "report" => report(),
        "exit" => std::process::exit(num(1) as i32),
        "kill" => kill_self(num(1) as i32),
        "wait-signal" => wait_signal(),
        "orphans" => make_orphans(num(1)),
        "zombies" => println!("zombies={}", count_zombies()),
        "alloc" => alloc(num(1) as usize),
        "read" => try_read(arg(1)),
        "write" => try_write(arg(1)),
        "winsize" => winsize(),
        "serve" => serve(num(1) as u16, num(2).max(1) as usize),
        "connect" => connect(arg(1), num(2) as u16),
        "fork" => fork_children(num(1)),
        "rawsend" => raw::rawsend(arg(1), arg(2), num(3) as u16, arg(4)),
        "sleep" => std::thread::sleep(std::time::Duration::from_millis(num(1) as u64)),
        "now" => println!("{}", monotonic_us()),
        other => {
            eprintln!("probe: unknown command `{other}`");
            std::process::exit(2);
        }
    }
}

fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn report() {
    let mut out = String::new();
    let mut put = |k: &str, v: &str| out.push_str(&format!("{k}={v}\n"));
    put("pid", &std::process::id().to_string());
    // SAFETY: getuid, getgid and getppid cannot fail.
    let (uid, gid, ppid) = unsafe { (libc::getuid(), libc::getgid(), libc::getppid()) };
    put("ppid", &ppid.to_string());
    put("uid", &uid.to_string());
    put("gid", &gid.to_string());
    put("hostname", read("/proc/sys/kernel/hostname").trim());
    put(
        "pid1",
        read("/proc/1/cmdline").replace('\0', " ").trim_end(),
    );
    put(
        "cwd",
        &std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    for map in ["uid_map", "gid_map"] {
        let text = read(&format!("/proc/self/{map}"));
        let lines: Vec<String> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        put(map, &lines.join(","));
    }
    for line in read("/proc/self/status").lines() {
        if let Some((k, v)) = line.split_once(':')
            && (k.starts_with("Cap") || k == "Seccomp" || k == "NoNewPrivs")
        {
            put(k, v.trim());
        }
    }
    for ns in ["ipc", "net", "uts", "pid", "mnt", "user", "cgroup"] {
        let link = std::fs::read_link(format!("/proc/self/ns/{ns}"));
        put(
            &format!("ns.{ns}"),
            &link.map(|p| p.display().to_string()).unwrap_or_default(),
        );
    }
    let devs = read("/proc/net/dev");
    let netdevs: Vec<&str> = devs
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    put("netdevs", &netdevs.join(","));
    // mountinfo: "id parent major:minor root mountpoint options - fstype source superoptions"
    for line in read("/proc/self/mountinfo").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let dash = f.iter().position(|x| *x == "-").unwrap_or(f.len());
        if f.len() > 5 && dash + 1 < f.len() {
            put("mount", &format!("{} {} {}", f[4], f[dash + 1], f[5]));
        }
    }
    put("zombies", &count_zombies().to_string());
    let _ = std::io::stdout().write_all(out.as_bytes());
}

fn kill_self(sig: i32) {
    // SAFETY: plain syscalls on our own pid.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::kill(libc::getpid(), sig);
    }
    std::thread::sleep(std::time::Duration::from_secs(5));
    std::process::exit(1);
}

fn wait_signal() {
    let mut set = unsafe { std::mem::zeroed::<libc::sigset_t>() };
    let sigs = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR1];
    // SAFETY: the set is initialised by sigemptyset before use; blocking the
    // signals and taking them with sigwait needs no handler.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in sigs {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut sig = 0;
    // SAFETY: set and sig are valid.
    unsafe { libc::sigwait(&set, &mut sig) };
    println!("got {sig}");
}

fn make_orphans(n: i64) {
    for _ in 0..n {
        // SAFETY: the process is single-threaded; children only sleep and exit.
        unsafe {
            match libc::fork() {
                0 => {
                    if libc::fork() == 0 {
                        libc::usleep(200_000);
                    }
                    libc::_exit(0);
                }
                pid if pid > 0 => {
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                _ => std::process::exit(3),
            }
        }
    }
    println!("orphans={n}");
}

fn count_zombies() -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            let stat = read(&format!("/proc/{}/stat", e.file_name().to_string_lossy()));
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .count()
}

fn alloc(mib: usize) {
    let mut v = vec![0u8; mib << 20];
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    println!(
        "alloc={}",
        v.iter().step_by(4096).filter(|b| **b == 1).count() / 256
    );
}

fn winsize() {
    // SAFETY: TIOCGWINSZ fills the winsize we pass.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    if rc != 0 {
        println!("winsize none");
    } else {
        println!("winsize {}x{}", ws.ws_row, ws.ws_col);
    }
}

fn try_read(path: &str) {
    match std::fs::read(path) {
        Ok(data) => println!("read {path} ok {}", data.len()),
        Err(e) => println!("read {path} err {}", e.raw_os_error().unwrap_or(0)),
    }
}

fn try_write(path: &str) {
    match std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
    {
        Ok(_) => println!("write {path} ok"),
        Err(e) => println!("write {path} err {}", e.raw_os_error().unwrap_or(0)),
    }
}

fn serve(port: u16, connections: usize) {
    let listener = match std::net::TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            println!("serve err {}", e.raw_os_error().unwrap_or(0));
            std::process::exit(1);
        }
    };
    println!("ready");
    let _ = std::io::stdout().flush();
    let hostname = read("/proc/sys/kernel/hostname");
    for mut conn in listener.incoming().flatten().take(connections) {
        let _ = conn.write_all(format!("hello from {}\n", hostname.trim()).as_bytes());
    }
}

fn connect(addr: &str, port: u16) {
    use std::io::Read;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut last = 0;
    while std::time::Instant::now() < deadline {
        match std::net::TcpStream::connect((addr, port)) {
            Ok(mut conn) => {
                let mut text = String::new();
                let _ = conn.read_to_string(&mut text);
                println!("got {}", text.trim());
                return;
            }
            Err(e) => last = e.raw_os_error().unwrap_or(0),
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    println!("connect err {last}");
    std::process::exit(1);
}

fn fork_children(n: i64) {
    let mut children = Vec::new();
    let mut errno = 0;
    for _ in 0..n {
        // SAFETY: the child only sleeps and exits.
        match unsafe { libc::fork() } {
            0 => unsafe {
                libc::sleep(30);
                libc::_exit(0);
            },
            pid if pid > 0 => children.push(pid),
            _ => {
                errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                break;
            }
        }
    }
    println!("forked={}", children.len());
    println!("fork_errno={errno}");
    for pid in children {
        // SAFETY: killing and reaping our own children.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
}
