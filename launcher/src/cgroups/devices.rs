//! Device access: which device nodes a container may create, read and
//! write. Enforced by the v1 `devices` controller ([`v1_lines`]) or, in a
//! cgroup2 cgroup, by an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`
//! ([`program`], [`attach`]), as runc and crun do.
//!
//! Root in a container holds CAP_MKNOD (docker's default set) and could
//! otherwise `mknod /x b 7 0` and write the host's loop device, or open a
//! device node an image ships. A user namespace needs none of this: the
//! kernel refuses mknod there and ignores device nodes on its mounts.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use super::{Error, Result};

/// Character or block device (`c` and `b` of the v1 `devices.allow` syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Char,
    Block,
}

/// Access bits, with the values of `BPF_DEVCG_ACC_*` (linux/bpf.h).
pub const MKNOD: u8 = 1;
pub const READ: u8 = 2;
pub const WRITE: u8 = 4;
pub const RWM: u8 = READ | WRITE | MKNOD;

/// One allowed device (or range, with `None` for `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub kind: Kind,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    /// [`READ`], [`WRITE`], [`MKNOD`] or'ed.
    pub access: u8,
}

const fn allow(kind: Kind, major: Option<u32>, minor: Option<u32>, access: u8) -> Rule {
    Rule {
        kind,
        major,
        minor,
        access,
    }
}

/// What a container may do with devices once everything else is denied:
/// docker's effective list. moby's default spec (daemon/pkg/oci/defaults.go)
/// denies all, allows null, zero, urandom, random, tty and console, denies
/// fuse again (a no-op after the deny-all, left out here); runc appends its
/// `specconv.AllowedDevices`: mknod of any node, null, random, full, tty,
/// zero, urandom, every pty slave (major 136), /dev/ptmx and /dev/net/tun
/// (removed in runc 1.2.0-rc.1 by runc#3468, put back because that broke
/// users: libcontainer/specconv/spec_linux.go says why).
pub const ALLOWED: [Rule; 12] = [
    allow(Kind::Char, None, None, MKNOD),
    allow(Kind::Block, None, None, MKNOD),
    allow(Kind::Char, Some(1), Some(3), RWM),    // null
    allow(Kind::Char, Some(1), Some(5), RWM),    // zero
    allow(Kind::Char, Some(1), Some(7), RWM),    // full
    allow(Kind::Char, Some(1), Some(8), RWM),    // random
    allow(Kind::Char, Some(1), Some(9), RWM),    // urandom
    allow(Kind::Char, Some(5), Some(0), RWM),    // tty
    allow(Kind::Char, Some(5), Some(1), RWM),    // console
    allow(Kind::Char, Some(5), Some(2), RWM),    // ptmx
    allow(Kind::Char, Some(136), None, RWM),     // pts/*
    allow(Kind::Char, Some(10), Some(200), RWM), // net/tun
];

impl Rule {
    /// The rule as v1 `devices.allow` takes it: `c 1:3 rwm`, `c 136:* rwm`.
    pub fn v1_line(&self) -> String {
        let number = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        format!(
            "{} {}:{} {}",
            self.kind_letter(),
            number(self.major),
            number(self.minor),
            self.access_letters()
        )
    }

    /// `c` or `b`.
    pub fn kind_letter(&self) -> &'static str {
        match self.kind {
            Kind::Char => "c",
            Kind::Block => "b",
        }
    }

    /// `rwm` or part of it, in that order.
    pub fn access_letters(&self) -> String {
        [(READ, 'r'), (WRITE, 'w'), (MKNOD, 'm')]
            .iter()
            .filter(|(bit, _)| self.access & bit != 0)
            .map(|(_, c)| *c)
            .collect()
    }
}

/// v1: written to `devices.deny` first, so that only what follows is allowed
/// (cgroup-v1/devices.rst: `a` removes every entry and denies by default).
pub const V1_DENY_ALL: &str = "a";

/// v1: the lines for `devices.allow`, one write each (the kernel takes one
/// rule per write).
pub fn v1_lines(rules: &[Rule]) -> Vec<String> {
    rules.iter().map(Rule::v1_line).collect()
}

// ---- cgroup v2: the eBPF program -------------------------------------------

/// `struct bpf_insn` (linux/bpf.h): opcode, destination and source register
/// in one byte (bit fields `dst_reg:4, src_reg:4`, in declaration order from
/// the low bits on little-endian machines), offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

// Opcodes (Documentation/bpf/standardization/instruction-set.rst): class
// in the low 3 bits, then source (K: immediate, X: register), then operation.
const BPF_LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W: 32-bit load
const BPF_ALU_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K: 32-bit, zero-extends
const BPF_ALU_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const BPF_ALU_MOV_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const BPF_ALU_MOV_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const BPF_JMP_JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K: if dst != imm, pc += off
const BPF_JMP_JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X: if dst != src, pc += off
const BPF_JMP_EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT: return r0

// Registers: r0 holds the result, r1 the context pointer on entry.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

// `BPF_DEVCG_DEV_*`: the device type in the context's access_type.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    #[cfg(target_endian = "little")]
    let regs = dst | (src << 4);
    #[cfg(target_endian = "big")]
    let regs = (dst << 4) | src;
    Insn {
        code,
        regs,
        off,
        imm,
    }
}

/// The program for `rules`: 1 (allow) when a rule covers the access, else 0.
///
/// The context is `struct bpf_cgroup_dev_ctx` (linux/bpf.h): `u32
/// access_type` (device type `BPF_DEVCG_DEV_*` in the low 16 bits, access
/// `BPF_DEVCG_ACC_*` in the high 16), `u32 major`, `u32 minor`. The shape
/// is runc's (libcontainer/cgroups/devices/devicefilter.go, itself from
/// crun's ebpf.c): load the fields into r2..r5, then one block per rule
/// that jumps to the next block on a mismatch and returns 1 at its end.
/// Only allow rules: the deny-all is the final `return 0`.
pub fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(BPF_LDX_MEM_W, R2, R1, 0, 0),     // r2 = access_type
        insn(BPF_ALU_AND_K, R2, 0, 0, 0xffff), // r2 = type
        insn(BPF_LDX_MEM_W, R3, R1, 0, 0),     // r3 = access_type
        insn(BPF_ALU_RSH_K, R3, 0, 0, 16),     // r3 = access
        insn(BPF_LDX_MEM_W, R4, R1, 4, 0),     // r4 = major
        insn(BPF_LDX_MEM_W, R5, R1, 8, 0),     // r5 = minor
    ];
    for rule in rules {
        prog.extend(rule_block(rule));
    }
    prog.push(insn(BPF_ALU_MOV_K, R0, 0, 0, 0));
    prog.push(insn(BPF_JMP_EXIT, 0, 0, 0, 0));
    prog
}

/// One rule's block. Every jump goes to the first instruction after the
/// block; a jump's offset counts from the instruction after the jump.
fn rule_block(rule: &Rule) -> Vec<Insn> {
    let kind = match rule.kind {
        Kind::Char => DEV_CHAR,
        Kind::Block => DEV_BLOCK,
    };
    // (opcode, dst, src, imm) of each "go to the next block unless" test.
    let mut tests = vec![(BPF_JMP_JNE_K, R2, 0, kind)];
    let mut block = Vec::new();
    if rule.access & RWM != RWM {
        // The access asked for must lie within the rule's: r1 = r3 & access,
        // and r1 != r3 means a bit outside it. r1 (the context) is no longer
        // needed once the fields are loaded.
        tests.push((BPF_ALU_MOV_X, R1, R3, 0));
        tests.push((BPF_ALU_AND_K, R1, 0, i32::from(rule.access)));
        tests.push((BPF_JMP_JNE_X, R1, R3, 0));
    }
    // A 64-bit compare with the immediate sign-extended: right for device
    // numbers, whose majors have 12 bits and minors 20 (linux/kdev_t.h).
    if let Some(major) = rule.major {
        tests.push((BPF_JMP_JNE_K, R4, 0, major as i32));
    }
    if let Some(minor) = rule.minor {
        tests.push((BPF_JMP_JNE_K, R5, 0, minor as i32));
    }
    // The tests, then `r0 = 1; exit`.
    let len = tests.len() + 2;
    for (i, (code, dst, src, imm)) in tests.into_iter().enumerate() {
        let off = match code {
            BPF_JMP_JNE_K | BPF_JMP_JNE_X => (len - (i + 1)) as i16,
            _ => 0,
        };
        block.push(insn(code, dst, src, off, imm));
    }
    block.push(insn(BPF_ALU_MOV_K, R0, 0, 0, 1));
    block.push(insn(BPF_JMP_EXIT, 0, 0, 0, 0));
    block
}

// bpf(2) commands, program and attach types (linux/bpf.h enums).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Programs of the ancestors run too, and all must allow (runc's flag).
const BPF_F_ALLOW_MULTI: u32 = 1 << 1;

/// The head of `union bpf_attr` for BPF_PROG_LOAD, up to
/// `expected_attach_type`; the kernel takes a shorter attr and reads the
/// rest as zero (`bpf_check_uarg_tail_zero`).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH, up to `attach_flags`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// Loads [`program`]`(rules)` and attaches it to the cgroup2 directory
/// `dir`, before any process joins it. The attachment holds the program:
/// its fd is closed here, and it goes with the cgroup when that is removed.
pub fn attach(dir: &Path, rules: &[Rule]) -> Result<()> {
    let prog = load(&program(rules)).map_err(|source| Error::DeviceProgram {
        step: "load",
        path: dir.to_path_buf(),
        source,
    })?;
    attach_to(dir, &prog).map_err(|source| Error::DeviceProgram {
        step: "attach",
        path: dir.to_path_buf(),
        source,
    })
}

/// BPF_PROG_LOAD. Kernels before 5.11 charge programs to RLIMIT_MEMLOCK
/// and may refuse with EPERM, where runc and crun raise the limit and
/// retry; a raised limit here would pass on to the container, cloned from
/// this process later, so the error is reported instead.
fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    // The license matters only to helpers marked GPL-only; this program
    // calls none. runc passes "Apache", crun "GPL".
    let license = c"Apache";
    let mut name = [0u8; 16];
    name[..14].copy_from_slice(b"cradle_devices");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: bpf(2) reads `attr` (size given) and, through it, `insns` and
    // `license`, which outlive the call; no log buffer is passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn attach_to(dir: &Path, prog: &OwnedFd) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let cgroup = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)?;
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
    };
    // SAFETY: bpf(2) reads `attr`, which outlives the call; both fds are open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The access `(kind, major, minor, access)` asked of the kernel.
    type Request = (Kind, u32, u32, u8);

    /// What the v1 controller decides after `a` in devices.deny and `rules`
    /// in devices.allow: allowed when one rule covers the whole access.
    fn v1_allows(rules: &[Rule], (kind, major, minor, access): Request) -> bool {
        rules.iter().any(|r| {
            r.kind == kind
                && r.major.is_none_or(|m| m == major)
                && r.minor.is_none_or(|m| m == minor)
                && access & !r.access == 0
        })
    }

    /// Runs `prog` as the kernel would on a `struct bpf_cgroup_dev_ctx`,
    /// for the few opcodes [`program`] emits; any other is a bug here.
    /// Jumps only go forward, so the loop ends.
    fn run(prog: &[Insn], (kind, major, minor, access): Request) -> u64 {
        let kind = match kind {
            Kind::Char => DEV_CHAR as u32,
            Kind::Block => DEV_BLOCK as u32,
        };
        let ctx = [(u32::from(access) << 16) | kind, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                BPF_LDX_MEM_W => {
                    assert_eq!(src, R1 as usize, "loads only from the context");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                BPF_ALU_AND_K => r[dst] = u64::from(r[dst] as u32 & i.imm as u32),
                BPF_ALU_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
                BPF_ALU_MOV_K => r[dst] = u64::from(i.imm as u32),
                BPF_ALU_MOV_X => r[dst] = u64::from(r[src] as u32),
                BPF_JMP_JNE_K | BPF_JMP_JNE_X => {
                    assert!(i.off > 0, "backward or empty jump at {}", pc - 1);
                    // K compares with the immediate sign-extended to 64 bits.
                    let other = match i.code {
                        BPF_JMP_JNE_K => i.imm as i64 as u64,
                        _ => r[src],
                    };
                    if r[dst] != other {
                        pc += i.off as usize;
                    }
                }
                BPF_JMP_EXIT => return r[R0 as usize],
                code => panic!("opcode {code:#x} at {} is not emitted", pc - 1),
            }
        }
    }

    #[test]
    fn allowlist_reads_as_docker_writes_it() {
        let lines = v1_lines(&ALLOWED);
        assert_eq!(
            lines,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c 10:200 rwm",
            ]
        );
    }

    #[test]
    fn program_allows_the_usual_nodes_and_mknod_but_not_other_devices() {
        let prog = program(&ALLOWED);
        let rw = READ | WRITE;
        for (request, allowed, what) in [
            ((Kind::Char, 1, 3, rw), true, "open /dev/null"),
            ((Kind::Char, 1, 9, READ), true, "read /dev/urandom"),
            ((Kind::Char, 5, 2, rw), true, "open /dev/ptmx"),
            ((Kind::Char, 136, 7, rw), true, "open /dev/pts/7"),
            ((Kind::Char, 10, 200, rw), true, "open /dev/net/tun"),
            ((Kind::Block, 7, 0, MKNOD), true, "mknod a loop device"),
            ((Kind::Char, 1, 1, MKNOD), true, "mknod /dev/mem"),
            ((Kind::Block, 7, 0, READ), false, "read a loop device"),
            ((Kind::Block, 7, 0, WRITE), false, "write a loop device"),
            (
                (Kind::Block, 1, 3, READ),
                false,
                "a block device numbered as null",
            ),
            ((Kind::Char, 1, 1, READ), false, "read /dev/mem"),
            ((Kind::Char, 10, 237, rw), false, "open /dev/loop-control"),
            ((Kind::Char, 10, 229, rw), false, "open /dev/fuse"),
            ((Kind::Char, 4, 64, rw), false, "open /dev/ttyS0"),
            ((Kind::Char, 7, 1, READ), false, "read /dev/vcs1"),
            (
                (Kind::Char, 1, 1, READ | MKNOD),
                false,
                "mknod and read at once",
            ),
        ] {
            assert_eq!(run(&prog, request), u64::from(allowed), "{what}");
            assert_eq!(v1_allows(&ALLOWED, request), allowed, "{what} (v1)");
        }
    }

    #[test]
    fn program_decides_as_the_v1_controller_for_every_combination() {
        let prog = program(&ALLOWED);
        let numbers = [0, 1, 2, 3, 5, 7, 8, 9, 10, 136, 200, 229, 0xfff, u32::MAX];
        for kind in [Kind::Char, Kind::Block] {
            for major in numbers {
                for minor in numbers {
                    for access in 1..=RWM {
                        let request = (kind, major, minor, access);
                        assert_eq!(
                            run(&prog, request) == 1,
                            v1_allows(&ALLOWED, request),
                            "{request:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn each_block_jumps_to_the_next_and_the_program_ends_denying() {
        let prog = program(&[allow(Kind::Char, Some(1), None, READ)]);
        assert_eq!(
            &prog[6..],
            [
                insn(BPF_JMP_JNE_K, R2, 0, 6, DEV_CHAR),
                insn(BPF_ALU_MOV_X, R1, R3, 0, 0),
                insn(BPF_ALU_AND_K, R1, 0, 0, READ as i32),
                insn(BPF_JMP_JNE_X, R1, R3, 3, 0),
                insn(BPF_JMP_JNE_K, R4, 0, 2, 1),
                insn(BPF_ALU_MOV_K, R0, 0, 0, 1),
                insn(BPF_JMP_EXIT, 0, 0, 0, 0),
                insn(BPF_ALU_MOV_K, R0, 0, 0, 0),
                insn(BPF_JMP_EXIT, 0, 0, 0, 0),
            ]
        );
        assert_eq!(std::mem::size_of::<Insn>(), 8, "struct bpf_insn");
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 72);
    }
}
