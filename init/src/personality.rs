//! Which init this one stands in for, picked by the name it is invoked by,
//! and the defaults, messages and exit codes that come with each.

/// The init whose behaviour to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Personality {
    /// Our own defaults: the best of the three (see the README).
    Cradle,
    /// tini, as `tini` or `docker-init` (`dockerd --init-path`).
    Tini,
    /// Yelp's dumb-init.
    DumbInit,
    /// openSUSE's catatonit, as `catatonit` or `podman-init`.
    Catatonit,
}

impl Personality {
    /// The personality for `argv[0]`: its last path component decides.
    pub fn from_argv0(argv0: &str) -> Personality {
        match argv0.rsplit('/').next().unwrap_or(argv0) {
            "tini" | "tini-static" | "docker-init" => Personality::Tini,
            "dumb-init" => Personality::DumbInit,
            "catatonit" | "podman-init" => Personality::Catatonit,
            _ => Personality::Cradle,
        }
    }

    /// The exit code of a child whose exec failed with `errno`. tini and we
    /// use the shell's 127 (not found) / 126 (not executable); dumb-init
    /// exits 2 and catatonit 1 whatever the cause.
    pub fn exec_failure_code(self, errno: crate::errno::Errno) -> u8 {
        match self {
            Personality::Cradle | Personality::Tini if errno == crate::errno::Errno::ENOENT => 127,
            Personality::Cradle | Personality::Tini => 126,
            Personality::DumbInit => 2,
            Personality::Catatonit => 1,
        }
    }

    /// The default verbosity: warnings for all but dumb-init, which prints
    /// only errors unless asked.
    pub fn default_verbosity(self) -> u8 {
        match self {
            Personality::DumbInit => 0,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_personality_by_basename() {
        for (argv0, want) in [
            ("tini", Personality::Tini),
            ("/usr/bin/docker-init", Personality::Tini),
            ("/usr/libexec/podman/catatonit", Personality::Catatonit),
            ("podman-init", Personality::Catatonit),
            ("./dumb-init", Personality::DumbInit),
            ("/sbin/cradle-init", Personality::Cradle),
            ("init", Personality::Cradle),
            ("", Personality::Cradle),
        ] {
            assert_eq!(Personality::from_argv0(argv0), want, "{argv0}");
        }
    }
}
