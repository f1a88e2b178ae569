//! The seccomp filter's compiler: a table of syscalls in, one classic BPF
//! program out, which finds the syscall's number by binary search.
//!
//! A chain that compares the number with every allowed syscall in turn
//! (seccompiler's, about 1,500 instructions for docker's profile) costs
//! every syscall of the workload a walk down the chain, and the container's
//! start the kernel's check and JIT of all of it. Here the numbers are cut
//! into ranges of one outcome and the program is a balanced tree of
//! `nr >= k` tests over them: about 9 tests per syscall, some 300
//! instructions in all.
//!
//! ```text
//! ld  arch;  jeq AUDIT_ARCH → +1;  ret KILL_PROCESS
//! ld  nr
//! jge k_mid  → +0 : +1          every inner node of the tree
//! ja  right                     (conditional jumps reach 255 at most,
//! <left subtree>                 `ja` any distance: the tree's jumps
//! <right subtree>                are all `ja`)
//! leaf: ret VERDICT, or the syscall's rules on its arguments
//! ```

use seccompiler::{BpfProgram, sock_filter};
use std::collections::BTreeMap;

/// What the filter answers for a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Fails with this errno, without running.
    Errno(u16),
    KillProcess,
    KillThread,
    /// SIGSYS to the caller.
    Trap,
    /// Allowed and logged.
    Log,
}

impl Verdict {
    /// The `SECCOMP_RET_*` value.
    pub fn ret(self) -> u32 {
        match self {
            Verdict::Allow => libc::SECCOMP_RET_ALLOW,
            Verdict::Errno(e) => libc::SECCOMP_RET_ERRNO | u32::from(e),
            Verdict::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Verdict::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Verdict::Trap => libc::SECCOMP_RET_TRAP,
            Verdict::Log => libc::SECCOMP_RET_LOG,
        }
    }
}

/// How an argument is compared: as its low 32 bits, or all 64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    Dword,
    Qword,
}

/// A comparison of an argument with a value (unsigned, as the kernel's
/// seccomp_data holds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq(u64),
    Ne(u64),
    /// `arg & mask == value`.
    MaskedEq {
        mask: u64,
        value: u64,
    },
    Lt(u64),
    Le(u64),
    Gt(u64),
    Ge(u64),
}

/// One condition on argument `arg` (0 to 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub width: Width,
    pub cmp: Cmp,
}

/// Conditions that must all hold for `verdict`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub conds: Vec<Cond>,
    pub verdict: Verdict,
}

/// A syscall's entry: the first rule that holds decides, else `otherwise`.
/// No rules: `otherwise` whatever the arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub rules: Vec<Rule>,
    pub otherwise: Verdict,
}

impl Entry {
    /// The same verdict whatever the arguments.
    pub fn always(verdict: Verdict) -> Self {
        Entry {
            rules: Vec::new(),
            otherwise: verdict,
        }
    }
}

/// The filter for `table` (syscall number → entry) on the architecture
/// `audit_arch` (`AUDIT_ARCH_*`): another architecture's syscalls kill the
/// process; a number not in the table gets `default`.
pub fn compile(table: &BTreeMap<u32, Entry>, default: Verdict, audit_arch: u32) -> BpfProgram {
    let mut program = vec![
        load(OFFSET_ARCH),
        jump(BPF_JEQ, audit_arch, 1, 0),
        ret(Verdict::KillProcess),
        load(OFFSET_NR),
    ];
    program.extend(tree(&ranges(table, default)));
    program
}

/// One stretch of syscall numbers, `first` up to the next range's, with
/// the same outcome.
#[derive(Debug)]
struct Range<'a> {
    first: u32,
    leaf: Leaf<'a>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Leaf<'a> {
    /// The same verdict whatever the arguments.
    Plain(Verdict),
    /// A syscall whose arguments decide.
    Rules(&'a Entry),
}

/// The whole 32-bit number space cut where the outcome changes.
fn ranges(table: &BTreeMap<u32, Entry>, default: Verdict) -> Vec<Range<'_>> {
    fn push<'a>(out: &mut Vec<Range<'a>>, first: u32, leaf: Leaf<'a>) {
        match out.last() {
            Some(last) if matches!(leaf, Leaf::Plain(_)) && last.leaf == leaf => {}
            _ => out.push(Range { first, leaf }),
        }
    }
    let mut out = Vec::new();
    let mut next = Some(0u32);
    for (&nr, entry) in table {
        if let Some(n) = next
            && nr > n
        {
            push(&mut out, n, Leaf::Plain(default));
        }
        let leaf = match entry.rules.is_empty() {
            true => Leaf::Plain(entry.otherwise),
            false => Leaf::Rules(entry),
        };
        push(&mut out, nr, leaf);
        next = nr.checked_add(1);
    }
    if let Some(n) = next {
        push(&mut out, n, Leaf::Plain(default));
    }
    out
}

/// Binary search over `ranges` (sorted, the first starting at 0), the
/// syscall number in A.
fn tree(ranges: &[Range<'_>]) -> Vec<sock_filter> {
    if let [only] = ranges {
        return leaf(only.leaf);
    }
    let (left, right) = ranges.split_at(ranges.len() / 2);
    let left_code = tree(left);
    let mut code = vec![
        jump(BPF_JGE, right[0].first, 0, 1),
        jump_always(left_code.len() as u32),
    ];
    code.extend(left_code);
    code.extend(tree(right));
    code
}

/// A range's code: its verdict, or the syscall's rules in order, each
/// condition followed by a `ja` past its rule, which the condition's code
/// skips when it holds.
fn leaf(leaf: Leaf<'_>) -> Vec<sock_filter> {
    let entry = match leaf {
        Leaf::Plain(verdict) => return vec![ret(verdict)],
        Leaf::Rules(entry) => entry,
    };
    let mut code = Vec::new();
    for rule in &entry.rules {
        let conds: Vec<Vec<sock_filter>> = rule.conds.iter().map(cond).collect();
        let len: usize = conds.iter().map(|c| c.len() + 1).sum::<usize>() + 1;
        let mut done = 0;
        for c in conds {
            done += c.len() + 1;
            code.extend(c);
            code.push(jump_always((len - done) as u32));
        }
        code.push(ret(rule.verdict));
    }
    code.push(ret(entry.otherwise));
    code
}

/// A condition's code: when it holds, it jumps one past its end (over the
/// caller's `ja`); when not, it ends on that `ja`.
fn cond(c: &Cond) -> Vec<sock_filter> {
    let low_offset = OFFSET_ARGS + 8 * u32::from(c.arg);
    let value = value_of(c.cmp);
    let mut low = vec![load(low_offset)];
    low.extend(compare_low(c.cmp, value as u32));
    if c.width == Width::Dword {
        return low;
    }
    let mut code = vec![load(low_offset + 4)];
    code.extend(compare_high(c.cmp, (value >> 32) as u32, low.len() as u32));
    code.extend(low);
    code
}

fn value_of(cmp: Cmp) -> u64 {
    match cmp {
        Cmp::Eq(v) | Cmp::Ne(v) | Cmp::Lt(v) | Cmp::Le(v) | Cmp::Gt(v) | Cmp::Ge(v) => v,
        Cmp::MaskedEq { value, .. } => value,
    }
}

/// The high word's test of a 64-bit comparison, A holding it; `low` is
/// the length of the low word's code after it. It decides true (past the
/// low code and the caller's `ja`), false (onto the `ja`), or nothing
/// (into the low code). Offsets count from the instruction after a jump.
fn compare_high(cmp: Cmp, high: u32, low: u32) -> Vec<sock_filter> {
    let (pass, fail) = (low + 1, low);
    match cmp {
        Cmp::Eq(_) => vec![jump(BPF_JEQ, high, 0, hop(fail))],
        Cmp::Ne(_) => vec![jump(BPF_JEQ, high, 0, hop(pass))],
        Cmp::MaskedEq { mask, .. } => vec![
            alu_and((mask >> 32) as u32),
            jump(BPF_JEQ, high, 0, hop(fail)),
        ],
        // Above or below decides; equal leaves it to the low word. The
        // first jump has the second still ahead of it: one more to skip.
        Cmp::Gt(_) | Cmp::Ge(_) => vec![
            jump(BPF_JGT, high, hop(pass + 1), 0),
            jump(BPF_JEQ, high, 0, hop(fail)),
        ],
        Cmp::Lt(_) | Cmp::Le(_) => vec![
            jump(BPF_JGT, high, hop(fail + 1), 0),
            jump(BPF_JEQ, high, 0, hop(pass)),
        ],
    }
}

/// The low word's (or a 32-bit argument's) test, A holding it: jumps over
/// the caller's `ja` when it holds, falls onto it when not.
fn compare_low(cmp: Cmp, v: u32) -> Vec<sock_filter> {
    match cmp {
        Cmp::Eq(_) => vec![jump(BPF_JEQ, v, 1, 0)],
        Cmp::Ne(_) => vec![jump(BPF_JEQ, v, 0, 1)],
        Cmp::MaskedEq { mask, .. } => vec![alu_and(mask as u32), jump(BPF_JEQ, v, 1, 0)],
        Cmp::Gt(_) => vec![jump(BPF_JGT, v, 1, 0)],
        Cmp::Ge(_) => vec![jump(BPF_JGE, v, 1, 0)],
        Cmp::Lt(_) => vec![jump(BPF_JGE, v, 0, 1)],
        Cmp::Le(_) => vec![jump(BPF_JGT, v, 0, 1)],
    }
}

/// A conditional jump's 8-bit offset; conditions are a few instructions
/// long, far below the limit.
fn hop(n: u32) -> u8 {
    debug_assert!(n < 256);
    n as u8
}

// Classic BPF, as linux/filter.h and linux/bpf_common.h define it.
/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP: u16 = 0x05;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_JGE: u16 = 0x30;
const BPF_K: u16 = 0x00;
/// BPF_ALU | BPF_AND | BPF_K.
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_RET_K: u16 = 0x06;

/// struct seccomp_data: nr, arch, instruction_pointer, args[6].
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARGS: u32 = 16;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

fn load(offset: u32) -> sock_filter {
    insn(BPF_LD_W_ABS, 0, 0, offset)
}

fn jump(op: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    insn(BPF_JMP | op | BPF_K, jt, jf, k)
}

fn jump_always(offset: u32) -> sock_filter {
    insn(BPF_JMP | BPF_JA, 0, 0, offset)
}

fn alu_and(k: u32) -> sock_filter {
    insn(BPF_ALU_AND_K, 0, 0, k)
}

fn ret(verdict: Verdict) -> sock_filter {
    insn(BPF_RET_K, 0, 0, verdict.ret())
}

/// An interpreter of the instructions [`compile`] emits, for tests: the
/// `SECCOMP_RET_*` value for a syscall.
#[cfg(test)]
pub fn run(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
    let word = |offset: u32| -> u32 {
        match offset {
            OFFSET_NR => nr,
            OFFSET_ARCH => arch,
            o if (OFFSET_ARGS..OFFSET_ARGS + 48).contains(&o) && o.is_multiple_of(4) => {
                let i = ((o - OFFSET_ARGS) / 8) as usize;
                if (o - OFFSET_ARGS).is_multiple_of(8) {
                    args[i] as u32
                } else {
                    (args[i] >> 32) as u32
                }
            }
            o => panic!("load at {o}"),
        }
    };
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let i = &program[pc];
        pc += 1;
        match i.code {
            BPF_LD_W_ABS => a = word(i.k),
            BPF_ALU_AND_K => a &= i.k,
            BPF_RET_K => return i.k,
            c if c == BPF_JMP | BPF_JA => pc += i.k as usize,
            c => {
                let taken = match c & 0xf0 {
                    BPF_JEQ => a == i.k,
                    BPF_JGT => a > i.k,
                    BPF_JGE => a >= i.k,
                    _ => panic!("instruction {c:#x}"),
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH: u32 = 0xC000_003E;
    const DENY: Verdict = Verdict::Errno(1);

    fn holds(cmp: Cmp, width: Width, arg: u64) -> bool {
        let a = match width {
            Width::Dword => arg & 0xffff_ffff,
            Width::Qword => arg,
        };
        let v = |v: u64| match width {
            Width::Dword => v & 0xffff_ffff,
            Width::Qword => v,
        };
        match cmp {
            Cmp::Eq(x) => a == v(x),
            Cmp::Ne(x) => a != v(x),
            Cmp::MaskedEq { mask, value } => a & v(mask) == v(value),
            Cmp::Lt(x) => a < v(x),
            Cmp::Le(x) => a <= v(x),
            Cmp::Gt(x) => a > v(x),
            Cmp::Ge(x) => a >= v(x),
        }
    }

    /// Values around the edges of both 32-bit halves.
    fn edges() -> Vec<u64> {
        let halves = [
            0u64,
            1,
            2,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_fffe,
            0xffff_ffff,
        ];
        halves
            .iter()
            .flat_map(|&h| halves.iter().map(move |&l| (h << 32) | l))
            .collect()
    }

    #[test]
    fn every_comparison_matches_its_meaning_on_both_halves() {
        for width in [Width::Dword, Width::Qword] {
            for &v in &edges() {
                let cmps = [
                    Cmp::Eq(v),
                    Cmp::Ne(v),
                    Cmp::Lt(v),
                    Cmp::Le(v),
                    Cmp::Gt(v),
                    Cmp::Ge(v),
                    Cmp::MaskedEq {
                        mask: v,
                        value: v & 0x8000_0001_8000_0001,
                    },
                ];
                for cmp in cmps {
                    let table = BTreeMap::from([(
                        7,
                        Entry {
                            rules: vec![Rule {
                                conds: vec![Cond { arg: 3, width, cmp }],
                                verdict: Verdict::Allow,
                            }],
                            otherwise: DENY,
                        },
                    )]);
                    let program = compile(&table, Verdict::KillThread, ARCH);
                    for &arg in &edges() {
                        let want = if holds(cmp, width, arg) {
                            Verdict::Allow
                        } else {
                            DENY
                        };
                        let args = [!arg, arg ^ 1, 0, arg, u64::MAX, 0];
                        assert_eq!(
                            run(&program, 7, ARCH, args),
                            want.ret(),
                            "{cmp:?} {width:?} on {arg:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn rules_are_tried_in_order_and_all_conditions_must_hold() {
        let table = BTreeMap::from([(
            3,
            Entry {
                rules: vec![
                    Rule {
                        conds: vec![
                            Cond {
                                arg: 0,
                                width: Width::Qword,
                                cmp: Cmp::Eq(1),
                            },
                            Cond {
                                arg: 1,
                                width: Width::Dword,
                                cmp: Cmp::Gt(10),
                            },
                        ],
                        verdict: Verdict::Trap,
                    },
                    Rule {
                        conds: vec![Cond {
                            arg: 0,
                            width: Width::Qword,
                            cmp: Cmp::Eq(1),
                        }],
                        verdict: Verdict::Log,
                    },
                ],
                otherwise: Verdict::Allow,
            },
        )]);
        let program = compile(&table, DENY, ARCH);
        let at = |a0, a1| run(&program, 3, ARCH, [a0, a1, 0, 0, 0, 0]);
        assert_eq!(at(1, 11), Verdict::Trap.ret());
        assert_eq!(at(1, 10), Verdict::Log.ret());
        assert_eq!(at(1, 0x1_0000_0000), Verdict::Log.ret());
        assert_eq!(at(2, 11), Verdict::Allow.ret());
        assert_eq!(run(&program, 4, ARCH, [1, 11, 0, 0, 0, 0]), DENY.ret());
    }

    #[test]
    fn ranges_cover_every_number_and_merge_equal_neighbours() {
        let table: BTreeMap<u32, Entry> = [0, 1, 2, 5, 6, u32::MAX]
            .into_iter()
            .map(|nr| (nr, Entry::always(Verdict::Allow)))
            .chain([(3, Entry::always(DENY))])
            .collect();
        let ranges = ranges(&table, DENY);
        let firsts: Vec<u32> = ranges.iter().map(|r| r.first).collect();
        // 0..=2 allowed, 3..=4 denied (3 by the table, 4 by default), 5..=6
        // allowed, then denied up to the last number, allowed.
        assert_eq!(firsts, [0, 3, 5, 7, u32::MAX]);
        let program = compile(&table, DENY, ARCH);
        for nr in (0..20).chain([u32::MAX - 1, u32::MAX]) {
            let want = match table.get(&nr) {
                Some(e) => e.otherwise,
                None => DENY,
            };
            assert_eq!(run(&program, nr, ARCH, [0; 6]), want.ret(), "{nr}");
        }
    }

    #[test]
    fn an_empty_table_gives_the_default_to_all() {
        let program = compile(&BTreeMap::new(), DENY, ARCH);
        assert_eq!(program.len(), 5);
        assert_eq!(run(&program, 0, ARCH, [0; 6]), DENY.ret());
        assert_eq!(
            run(&program, 0, ARCH ^ 1, [0; 6]),
            Verdict::KillProcess.ret()
        );
    }
}
