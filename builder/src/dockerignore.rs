//! Context step of a Containerfile build: the build context's
//! `.dockerignore`, the paths that COPY and ADD do not see. Docker's syntax:
//! one pattern a line relative to the context's root (a leading `/` is the
//! same root), `#` comments, `*` and `?` within a name, `[…]` sets, `**` any
//! number of directories, `!` an exception re-including what an earlier
//! line excluded. The last line that matches a path or one of its parents
//! decides, as moby's patternmatcher does.

use crate::error::{Error, Result};
use std::path::{Component, Path};

/// The patterns of a `.dockerignore`, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    /// Components; `**` is one of any number.
    parts: Vec<String>,
    /// A `!` line: what it matches is included again.
    exception: bool,
}

/// Bytes of a `.dockerignore` we read: it is the context's, untrusted.
const MAX_SIZE: u64 = 1 << 20;

impl Ignore {
    /// Reads `dir/.dockerignore`; no file means nothing is ignored.
    pub fn load(dir: &Path) -> Result<Ignore> {
        use std::io::Read;
        let path = dir.join(".dockerignore");
        let file = match open_regular(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ignore::default()),
            Err(e) => return Err(Error::io("opening", &path)(e)),
        };
        let mut text = String::new();
        file.take(MAX_SIZE + 1)
            .read_to_string(&mut text)
            .map_err(Error::io("reading", &path))?;
        if text.len() as u64 > MAX_SIZE {
            return Err(Error::io("reading", &path)(std::io::Error::other(format!(
                "larger than {MAX_SIZE} bytes"
            ))));
        }
        Ok(Ignore::parse(&text))
    }

    /// The patterns in `text`.
    pub fn parse(text: &str) -> Ignore {
        let patterns = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| {
                let (exception, pattern) = match line.strip_prefix('!') {
                    Some(rest) => (true, rest.trim()),
                    None => (false, line),
                };
                let parts = clean(pattern);
                (!parts.is_empty()).then_some(Pattern { parts, exception })
            })
            .collect();
        Ignore { patterns }
    }

    /// Leaves out what `pattern` matches too, whatever the file says.
    pub fn exclude(&mut self, pattern: &str) {
        self.patterns.push(Pattern {
            parts: clean(pattern),
            exception: false,
        });
    }

    /// True when `path` (relative to the context) is left out.
    pub fn excludes(&self, path: &Path) -> bool {
        let parts: Vec<&str> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(p) => p.to_str(),
                _ => None,
            })
            .collect();
        if parts.is_empty() {
            return false;
        }
        let mut excluded = false;
        for pattern in &self.patterns {
            if pattern.exception != excluded {
                continue;
            }
            // The path or a parent directory of it.
            if (1..=parts.len()).any(|n| match_parts(&pattern.parts, &parts[..n])) {
                excluded = !pattern.exception;
            }
        }
        excluded
    }

    /// True when some `!` line may include a path below an excluded one.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }
}

/// Opens `path` for reading when it is a regular file, never through a
/// symlink at its last component (a `.dockerignore` pointing elsewhere).
fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// A pattern's components as Go's `filepath.Clean` leaves them, without a
/// leading `/`: `.` dropped, `a/../b` is `b`.
fn clean(pattern: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    for part in pattern.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part.to_string()),
        }
    }
    parts
}

/// `pattern` against all of `path`, component by component; `**` takes
/// any number of components.
fn match_parts(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, tail)) => {
                crate::glob::match_name(first.as_bytes(), name.as_bytes())
                    && match_parts(rest, tail)
            }
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_as_docker_does() {
        let ignore = Ignore::parse(
            "# build output\n\
             target\n\
             /secret.key\n\
             *.log\n\
             !keep.log\n\
             **/*.tmp\n\
             docs/**/draft?.md\n\
             ./cache/../node_modules\n\
             \n\
             .git\n",
        );
        let cases = [
            ("target", true),
            ("target/debug/app", true),
            ("src/target", false),
            ("secret.key", true),
            ("a.log", true),
            ("sub/a.log", false),
            ("keep.log", false),
            ("x.tmp", true),
            ("deep/er/x.tmp", true),
            ("docs/draft1.md", true),
            ("docs/a/b/draft2.md", true),
            ("docs/final.md", false),
            ("node_modules/left-pad/index.js", true),
            ("cache", false),
            (".git/config", true),
            ("Containerfile", false),
        ];
        for (path, want) in cases {
            assert_eq!(ignore.excludes(Path::new(path)), want, "{path}");
        }
    }

    #[test]
    fn an_exception_reincludes_below_an_excluded_directory_and_the_last_line_wins() {
        let ignore = Ignore::parse("assets\n!assets/logo.png\n*.png\n");
        assert!(ignore.excludes(Path::new("assets/style.css")));
        // `*.png` is later than the exception, but matches only at the root.
        assert!(!ignore.excludes(Path::new("assets/logo.png")));
        assert!(ignore.excludes(Path::new("icon.png")));
        let ignore = Ignore::parse("!a\na\n");
        assert!(ignore.excludes(Path::new("a")));
        assert!(ignore.has_exceptions());
    }

    #[test]
    fn classes_and_escapes() {
        let ignore = Ignore::parse("[a-c]?.txt\nweird\\*name\n[^x]y\n");
        assert!(ignore.excludes(Path::new("b1.txt")));
        assert!(!ignore.excludes(Path::new("d1.txt")));
        assert!(ignore.excludes(Path::new("weird*name")));
        assert!(!ignore.excludes(Path::new("weirdXname")));
        assert!(ignore.excludes(Path::new("ay")));
        assert!(!ignore.excludes(Path::new("xy")));
    }
}
