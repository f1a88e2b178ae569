//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`),
//! ported for x86_64 and compiled by [`tree`] into one BPF program: an
//! allowlist, every other syscall fails with EPERM. Ported faithfully for
//! the 14 default capabilities:
//!
//! - the plain allowlist, less the 32-bit-only names (`*32`, `*_time64`,
//!   `socketcall` …) that have no x86_64 number;
//! - `ptrace`, `process_vm_readv/writev` (moby allows them on kernels ≥ 4.8),
//!   `arch_prctl`, `modify_ldt` (amd64), `chroot` (CAP_SYS_CHROOT is granted);
//! - `socket` unless the family is AF_VSOCK (40);
//! - `personality` only for the five personas moby lists;
//! - `clone` only without namespace flags (mask 0x7E020000);
//! - not `io_uring_*`: moby blocks them since Docker 25 (moby#46762), as
//!   io_uring has been a steady source of kernel privilege escalations;
//! - `clone3` fails with ENOSYS, so libcs fall back to `clone`, whose flags
//!   can be checked.
//!
//! Not ported: the 32-bit (x86, x32) sub-architectures; a 32-bit binary is
//! killed by the architecture check, where docker lets it run.

pub mod tree;

use seccompiler::BpfProgram;
use std::collections::BTreeMap;
use tree::{Cmp, Cond, Entry, Rule, Verdict, Width};

/// Syscalls allowed whatever their arguments.
pub const ALLOWED: &[i64] = &[
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_access,
    libc::SYS_adjtimex,
    libc::SYS_alarm,
    libc::SYS_arch_prctl,
    libc::SYS_bind,
    libc::SYS_brk,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_chdir,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_chroot,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_getres,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_connect,
    libc::SYS_copy_file_range,
    libc::SYS_creat,
    libc::SYS_dup,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_epoll_create,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_ctl_old,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_wait_old,
    libc::SYS_eventfd,
    libc::SYS_eventfd2,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fadvise64,
    libc::SYS_fallocate,
    libc::SYS_fanotify_mark,
    libc::SYS_fchdir,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_fcntl,
    libc::SYS_fdatasync,
    libc::SYS_fgetxattr,
    libc::SYS_flistxattr,
    libc::SYS_flock,
    libc::SYS_fork,
    libc::SYS_fremovexattr,
    libc::SYS_fsetxattr,
    libc::SYS_fstat,
    libc::SYS_fstatfs,
    libc::SYS_fsync,
    libc::SYS_ftruncate,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_futimesat,
    libc::SYS_get_robust_list,
    libc::SYS_get_thread_area,
    libc::SYS_getcpu,
    libc::SYS_getcwd,
    libc::SYS_getdents,
    libc::SYS_getdents64,
    libc::SYS_getegid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getgroups,
    libc::SYS_getitimer,
    libc::SYS_getpeername,
    libc::SYS_getpgid,
    libc::SYS_getpgrp,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getpriority,
    libc::SYS_getrandom,
    libc::SYS_getresgid,
    libc::SYS_getresuid,
    libc::SYS_getrlimit,
    libc::SYS_getrusage,
    libc::SYS_getsid,
    libc::SYS_getsockname,
    libc::SYS_getsockopt,
    libc::SYS_gettid,
    libc::SYS_gettimeofday,
    libc::SYS_getuid,
    libc::SYS_getxattr,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_init,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_rm_watch,
    libc::SYS_io_cancel,
    libc::SYS_io_destroy,
    libc::SYS_io_getevents,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_ioctl,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_kill,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_restrict_self,
    libc::SYS_lchown,
    libc::SYS_lgetxattr,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_listen,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_lremovexattr,
    libc::SYS_lseek,
    libc::SYS_lsetxattr,
    libc::SYS_lstat,
    libc::SYS_madvise,
    libc::SYS_membarrier,
    libc::SYS_memfd_create,
    libc::SYS_memfd_secret,
    libc::SYS_mincore,
    libc::SYS_mkdir,
    libc::SYS_mkdirat,
    libc::SYS_mknod,
    libc::SYS_mknodat,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_mlockall,
    libc::SYS_mmap,
    libc::SYS_modify_ldt,
    libc::SYS_mprotect,
    libc::SYS_mq_getsetattr,
    libc::SYS_mq_notify,
    libc::SYS_mq_open,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_unlink,
    libc::SYS_mremap,
    libc::SYS_msgctl,
    libc::SYS_msgget,
    libc::SYS_msgrcv,
    libc::SYS_msgsnd,
    libc::SYS_msync,
    libc::SYS_munlock,
    libc::SYS_munlockall,
    libc::SYS_munmap,
    libc::SYS_name_to_handle_at,
    libc::SYS_nanosleep,
    libc::SYS_newfstatat,
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_pause,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pipe,
    libc::SYS_pipe2,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_prctl,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_preadv2,
    libc::SYS_prlimit64,
    libc::SYS_process_mrelease,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pselect6,
    libc::SYS_ptrace,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_pwritev2,
    libc::SYS_read,
    libc::SYS_readahead,
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmmsg,
    libc::SYS_recvmsg,
    libc::SYS_remap_file_pages,
    libc::SYS_removexattr,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_restart_syscall,
    libc::SYS_rmdir,
    libc::SYS_rseq,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_setattr,
    libc::SYS_sched_setparam,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_yield,
    libc::SYS_seccomp,
    libc::SYS_select,
    libc::SYS_semctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_sendfile,
    libc::SYS_sendmmsg,
    libc::SYS_sendmsg,
    libc::SYS_sendto,
    libc::SYS_set_robust_list,
    libc::SYS_set_thread_area,
    libc::SYS_set_tid_address,
    libc::SYS_setfsgid,
    libc::SYS_setfsuid,
    libc::SYS_setgid,
    libc::SYS_setgroups,
    libc::SYS_setitimer,
    libc::SYS_setpgid,
    libc::SYS_setpriority,
    libc::SYS_setregid,
    libc::SYS_setresgid,
    libc::SYS_setresuid,
    libc::SYS_setreuid,
    libc::SYS_setrlimit,
    libc::SYS_setsid,
    libc::SYS_setsockopt,
    libc::SYS_setuid,
    libc::SYS_setxattr,
    libc::SYS_shmat,
    libc::SYS_shmctl,
    libc::SYS_shmdt,
    libc::SYS_shmget,
    libc::SYS_shutdown,
    libc::SYS_sigaltstack,
    libc::SYS_signalfd,
    libc::SYS_signalfd4,
    libc::SYS_socketpair,
    libc::SYS_splice,
    libc::SYS_stat,
    libc::SYS_statfs,
    libc::SYS_statx,
    libc::SYS_symlink,
    libc::SYS_symlinkat,
    libc::SYS_sync,
    libc::SYS_sync_file_range,
    libc::SYS_syncfs,
    libc::SYS_sysinfo,
    libc::SYS_tee,
    libc::SYS_tgkill,
    libc::SYS_time,
    libc::SYS_timer_create,
    libc::SYS_timer_delete,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_gettime,
    libc::SYS_timerfd_settime,
    libc::SYS_times,
    libc::SYS_tkill,
    libc::SYS_truncate,
    libc::SYS_umask,
    libc::SYS_uname,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_utime,
    libc::SYS_utimensat,
    libc::SYS_utimes,
    libc::SYS_vfork,
    libc::SYS_vmsplice,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_write,
    libc::SYS_writev,
];

/// moby: `personality` with these arguments only (PER_LINUX, PER_LINUX32,
/// UNAME26, UNAME26|PER_LINUX32, and 0xffffffff to query).
pub const PERSONAS: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

pub const AF_VSOCK: u64 = 40;

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
pub const CLONE_NAMESPACES: u64 = 0x7E02_0000;

/// `AUDIT_ARCH_*` of the architecture the launcher runs on.
pub fn audit_arch() -> u32 {
    #[cfg(target_arch = "aarch64")]
    return 0xC000_00B7;
    #[cfg(not(target_arch = "aarch64"))]
    0xC000_003E
}

/// The filter to install ([`tree::compile`]): one program.
pub fn default_profile() -> Vec<BpfProgram> {
    let allow = || Entry::always(Verdict::Allow);
    let eperm = Verdict::Errno(libc::EPERM as u16);
    let arg0 = |width, cmp| Cond { arg: 0, width, cmp };
    let mut table: BTreeMap<u32, Entry> = ALLOWED.iter().map(|&nr| (nr as u32, allow())).collect();
    table.insert(
        libc::SYS_socket as u32,
        Entry {
            rules: vec![Rule {
                conds: vec![arg0(Width::Qword, Cmp::Eq(AF_VSOCK))],
                verdict: eperm,
            }],
            otherwise: Verdict::Allow,
        },
    );
    table.insert(
        libc::SYS_personality as u32,
        Entry {
            rules: PERSONAS
                .iter()
                .map(|&p| Rule {
                    conds: vec![arg0(Width::Dword, Cmp::Eq(p))],
                    verdict: Verdict::Allow,
                })
                .collect(),
            otherwise: eperm,
        },
    );
    table.insert(
        libc::SYS_clone as u32,
        Entry {
            rules: vec![Rule {
                conds: vec![arg0(
                    Width::Qword,
                    Cmp::MaskedEq {
                        mask: CLONE_NAMESPACES,
                        value: 0,
                    },
                )],
                verdict: Verdict::Allow,
            }],
            otherwise: eperm,
        },
    );
    table.insert(
        libc::SYS_clone3 as u32,
        Entry::always(Verdict::Errno(libc::ENOSYS as u16)),
    );
    vec![tree::compile(&table, eperm, audit_arch())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

    fn verdict(nr: i64, args: [u64; 6]) -> u32 {
        tree::run(&default_profile()[0], nr as u32, audit_arch(), args)
    }

    #[test]
    fn one_short_filter() {
        let filters = default_profile();
        assert_eq!(filters.len(), 1);
        // seccompiler's chain of the same rules was 1,500 instructions.
        assert!(filters[0].len() < 400, "{} instructions", filters[0].len());
    }

    #[test]
    fn every_syscall_number_gets_the_profiles_verdict() {
        let wanted = |nr: u32, args: [u64; 6]| -> u32 {
            let nr = i64::from(nr);
            match nr {
                libc::SYS_socket if args[0] == AF_VSOCK => EPERM,
                libc::SYS_personality if !PERSONAS.contains(&(args[0] & 0xffff_ffff)) => EPERM,
                libc::SYS_clone if args[0] & CLONE_NAMESPACES != 0 => EPERM,
                libc::SYS_clone3 => libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
                libc::SYS_socket | libc::SYS_personality | libc::SYS_clone => {
                    libc::SECCOMP_RET_ALLOW
                }
                _ if ALLOWED.contains(&nr) => libc::SECCOMP_RET_ALLOW,
                _ => EPERM,
            }
        };
        let program = &default_profile()[0];
        let samples = [
            0,
            1,
            8,
            40,
            0x20008,
            0xffff_ffff,
            0x1_0000_0000 | 40,
            0x1_0000_0008,
            0x1_0000_0000,
            CLONE_NAMESPACES,
            libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWNET as u64 | libc::SIGCHLD as u64,
            libc::CLONE_VM as u64 | libc::CLONE_THREAD as u64,
            u64::MAX,
        ];
        let numbers = (0..1100u32).chain([
            0x4000_0000,
            0x4000_0001,
            0x4000_0000 | 165,
            0x7fff_ffff,
            u32::MAX,
        ]);
        for nr in numbers {
            for &a in &samples {
                let args = [a, 0, 0, 0, 0, 0];
                assert_eq!(
                    tree::run(program, nr, audit_arch(), args),
                    wanted(nr, args),
                    "syscall {nr} with arg0 {a:#x}"
                );
            }
        }
    }

    /// The kernel accepts the program and it answers as the interpreter
    /// says: installed in a forked child, which reports each answer.
    #[test]
    fn the_kernel_runs_it_as_compiled() {
        let program = &default_profile()[0];
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        let mut results = [0i64; 8];
        let (read, write) = nix::unistd::pipe().unwrap();
        // SAFETY: the child makes raw syscalls only and _exits.
        match unsafe { libc::fork() } {
            0 => unsafe {
                let errno = |r: libc::c_long| {
                    if r < 0 {
                        *libc::__errno_location() as i64
                    } else {
                        0
                    }
                };
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                let ok = libc::syscall(libc::SYS_seccomp, 1, 0, &prog as *const libc::sock_fprog);
                let out = [
                    errno(ok),
                    errno(libc::syscall(libc::SYS_getppid)),
                    errno(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUTS)),
                    errno(libc::syscall(libc::SYS_clone3, 0usize, 0usize)),
                    errno(libc::syscall(libc::SYS_personality, 0x1234usize)),
                    errno(libc::syscall(
                        libc::SYS_socket,
                        AF_VSOCK as usize,
                        1usize,
                        0usize,
                    )),
                    errno(libc::syscall(libc::SYS_personality, 0xffff_ffffusize)),
                    errno(libc::syscall(
                        libc::SYS_socket,
                        libc::AF_UNIX as usize,
                        1usize,
                        0usize,
                    )),
                ];
                libc::write(write.as_raw_fd(), out.as_ptr().cast(), 64);
                libc::_exit(0);
            },
            pid => {
                drop(write);
                let mut bytes = [0u8; 64];
                let mut file = std::fs::File::from(read);
                std::io::Read::read_exact(&mut file, &mut bytes).unwrap();
                for (i, chunk) in bytes.chunks(8).enumerate() {
                    results[i] = i64::from_ne_bytes(chunk.try_into().unwrap());
                }
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            }
        }
        let (eperm, enosys) = (libc::EPERM as i64, libc::ENOSYS as i64);
        assert_eq!(results, [0, 0, eperm, enosys, eperm, eperm, 0, 0]);
    }

    #[test]
    fn another_architecture_is_killed() {
        let program = &default_profile()[0];
        for arch in [0x4000_0003u32, 0, audit_arch() ^ 1] {
            assert_eq!(
                tree::run(program, libc::SYS_read as u32, arch, [0; 6]),
                libc::SECCOMP_RET_KILL_PROCESS
            );
        }
        assert_eq!(verdict(libc::SYS_read, [0; 6]), libc::SECCOMP_RET_ALLOW);
        assert_eq!(verdict(libc::SYS_mount, [0; 6]), EPERM);
    }

    #[test]
    fn allows_the_basics_and_not_mount() {
        assert!(ALLOWED.contains(&libc::SYS_execve));
        assert!(ALLOWED.contains(&libc::SYS_read));
        for denied in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_bpf,
            libc::SYS_kexec_load,
            libc::SYS_io_uring_setup,
            libc::SYS_io_uring_enter,
            libc::SYS_io_uring_register,
        ] {
            assert!(!ALLOWED.contains(&denied), "{denied}");
        }
    }
}
