//! Translating docker-style limits into the files of cgroup v1 or v2.

use super::Error;

/// Resource limits for one container, with `docker run`'s meanings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// `--memory`, bytes.
    pub memory: Option<u64>,
    /// `--memory-swap`: memory plus swap in bytes, -1 for unlimited swap.
    /// Unset with `memory` set allows as much swap as memory (docker).
    pub memory_swap: Option<i64>,
    /// `--pids-limit`; zero or negative means unlimited.
    pub pids: Option<i64>,
    /// `--cpus`: CPU time per wall time, 0.5 is half a core.
    pub cpus: Option<f64>,
    /// `--cpu-shares`: relative weight, v1 scale (2..=262144, default 1024).
    pub cpu_shares: Option<u64>,
}

/// One value to write: `file` in the controller's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
    /// Skipped when the file does not exist: swap files are missing when the
    /// kernel does not account swap, and only the implied default uses them.
    pub optional: bool,
}

/// The CFS period used for `--cpus`, as docker and runc use.
pub const CPU_PERIOD_US: u64 = 100_000;

impl Limits {
    /// The controllers these limits need.
    pub fn controllers(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.memory.is_some() || self.memory_swap.is_some() {
            out.push("memory");
        }
        if self.pids.is_some() {
            out.push("pids");
        }
        if self.cpus.is_some() || self.cpu_shares.is_some() {
            out.push("cpu");
        }
        out
    }

    /// The writes, in an order the kernel accepts on a fresh cgroup: v1
    /// refuses a memsw limit below the memory limit, so memory comes first.
    pub fn settings(&self, unified: bool) -> Result<Vec<Setting>, Error> {
        let mut out = Vec::new();
        self.push_memory(unified, &mut out)?;
        if let Some(pids) = self.pids {
            let value = if pids > 0 {
                pids.to_string()
            } else {
                "max".into()
            };
            out.push(set("pids", "pids.max", value));
        }
        self.push_cpu(unified, &mut out)?;
        Ok(out)
    }

    fn push_memory(&self, unified: bool, out: &mut Vec<Setting>) -> Result<(), Error> {
        let Some(memory) = self.memory else {
            return match self.memory_swap {
                Some(swap) => Err(invalid("memory-swap", swap, "needs a memory limit as well")),
                None => Ok(()),
            };
        };
        if memory == 0 {
            return Err(invalid("memory", memory, "must be positive"));
        }
        let total = match self.memory_swap {
            Some(-1) => None,
            Some(swap) if swap < 0 || (swap as u64) < memory => {
                return Err(invalid(
                    "memory-swap",
                    swap,
                    "must be -1 or at least the memory limit",
                ));
            }
            Some(swap) => Some(swap as u64),
            None => Some(memory.saturating_mul(2)),
        };
        let implied = self.memory_swap.is_none();
        if unified {
            out.push(set("memory", "memory.max", memory.to_string()));
            // v2 limits swap alone, v1 and docker limit memory plus swap.
            let swap = total.map_or("max".to_string(), |t| (t - memory).to_string());
            out.push(Setting {
                optional: implied,
                ..set("memory", "memory.swap.max", swap)
            });
        } else {
            out.push(set("memory", "memory.limit_in_bytes", memory.to_string()));
            let total = total.map_or("-1".to_string(), |t| t.to_string());
            out.push(Setting {
                optional: implied,
                ..set("memory", "memory.memsw.limit_in_bytes", total)
            });
        }
        Ok(())
    }

    fn push_cpu(&self, unified: bool, out: &mut Vec<Setting>) -> Result<(), Error> {
        if let Some(shares) = self.cpu_shares {
            if !(2..=262_144).contains(&shares) {
                return Err(invalid("cpu-shares", shares, "must be within 2..=262144"));
            }
            out.push(match unified {
                true => set("cpu", "cpu.weight", shares_to_weight(shares).to_string()),
                false => set("cpu", "cpu.shares", shares.to_string()),
            });
        }
        if let Some(cpus) = self.cpus {
            if !(cpus.is_finite() && cpus > 0.0) {
                return Err(invalid("cpus", cpus, "must be a positive number"));
            }
            // The kernel refuses quotas under 1ms.
            let quota = ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000);
            if unified {
                out.push(set("cpu", "cpu.max", format!("{quota} {CPU_PERIOD_US}")));
            } else {
                out.push(set("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                out.push(set("cpu", "cpu.cfs_quota_us", quota.to_string()));
            }
        }
        Ok(())
    }
}

/// v1 shares (2..=262144, default 1024) to v2 weight (1..=10000, default
/// 100) on the curve crun 1.23 and runc 1.3 use, which maps the default to
/// the default; the older linear formula gave 1024 → 39.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

fn set(controller: &'static str, file: &'static str, value: String) -> Setting {
    Setting {
        controller,
        file,
        value,
        optional: false,
    }
}

fn invalid(name: &'static str, value: impl ToString, why: &'static str) -> Error {
    Error::InvalidLimit {
        name,
        value: value.to_string(),
        why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = 1 << 20;

    fn files(limits: &Limits, unified: bool) -> Vec<(&'static str, String, bool)> {
        let settings = limits.settings(unified).unwrap();
        settings
            .into_iter()
            .map(|s| (s.file, s.value, s.optional))
            .collect()
    }

    #[test]
    fn memory_alone_allows_as_much_swap_as_memory() {
        let l = Limits {
            memory: Some(32 * M),
            ..Default::default()
        };
        assert_eq!(
            files(&l, false),
            [
                ("memory.limit_in_bytes", "33554432".into(), false),
                ("memory.memsw.limit_in_bytes", "67108864".into(), true)
            ]
        );
        assert_eq!(
            files(&l, true),
            [
                ("memory.max", "33554432".into(), false),
                ("memory.swap.max", "33554432".into(), true)
            ]
        );
    }

    #[test]
    fn memory_swap_is_total_in_v1_and_swap_only_in_v2() {
        let l = Limits {
            memory: Some(32 * M),
            memory_swap: Some(48 * M as i64),
            ..Default::default()
        };
        assert_eq!(
            files(&l, false)[1],
            ("memory.memsw.limit_in_bytes", (48 * M).to_string(), false)
        );
        assert_eq!(
            files(&l, true)[1],
            ("memory.swap.max", (16 * M).to_string(), false)
        );
        let unlimited = Limits {
            memory_swap: Some(-1),
            ..l
        };
        assert_eq!(files(&unlimited, false)[1].1, "-1");
        assert_eq!(files(&unlimited, true)[1].1, "max");
    }

    #[test]
    fn refuses_inconsistent_memory_limits() {
        let small = Limits {
            memory: Some(32 * M),
            memory_swap: Some(M as i64),
            ..Default::default()
        };
        assert!(matches!(
            small.settings(false),
            Err(Error::InvalidLimit {
                name: "memory-swap",
                ..
            })
        ));
        let alone = Limits {
            memory_swap: Some(-1),
            ..Default::default()
        };
        assert!(alone.settings(true).is_err());
        let zero = Limits {
            memory: Some(0),
            ..Default::default()
        };
        assert!(zero.settings(true).is_err());
    }

    #[test]
    fn pids_zero_or_negative_is_unlimited() {
        for (pids, want) in [(Some(64), "64"), (Some(0), "max"), (Some(-1), "max")] {
            let l = Limits {
                pids,
                ..Default::default()
            };
            assert_eq!(files(&l, true), [("pids.max", want.into(), false)]);
        }
    }

    #[test]
    fn cpus_become_a_quota_per_100ms() {
        let l = Limits {
            cpus: Some(0.5),
            ..Default::default()
        };
        assert_eq!(
            files(&l, false),
            [
                ("cpu.cfs_period_us", "100000".into(), false),
                ("cpu.cfs_quota_us", "50000".into(), false)
            ]
        );
        assert_eq!(files(&l, true), [("cpu.max", "50000 100000".into(), false)]);
        let tiny = Limits {
            cpus: Some(0.001),
            ..Default::default()
        };
        assert_eq!(
            files(&tiny, true),
            [("cpu.max", "1000 100000".into(), false)]
        );
        let bad = Limits {
            cpus: Some(-1.0),
            ..Default::default()
        };
        assert!(bad.settings(true).is_err());
    }

    #[test]
    fn shares_convert_to_weight_like_crun() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 100);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert!(shares_to_weight(512) < 100 && shares_to_weight(2048) > 100);
        let l = Limits {
            cpu_shares: Some(1024),
            ..Default::default()
        };
        assert_eq!(files(&l, true), [("cpu.weight", "100".into(), false)]);
        assert_eq!(files(&l, false), [("cpu.shares", "1024".into(), false)]);
    }

    #[test]
    fn controllers_follow_the_limits() {
        assert!(Limits::default().controllers().is_empty());
        let l = Limits {
            memory: Some(M),
            cpus: Some(1.0),
            pids: Some(5),
            ..Default::default()
        };
        assert_eq!(l.controllers(), ["memory", "pids", "cpu"]);
    }
}
