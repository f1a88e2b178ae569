//! Matching one path component against a glob pattern, for `[[copy]]`
//! sources and excludes and for `.dockerignore`.

/// One name against one pattern component, as Go's `filepath.Match` (what
/// `.dockerignore` and docker's COPY use): `*` any run, `?` one byte,
/// `[a-z]`/`[!a]`/`[^a]` one of a set, `\` escapes the next byte. A leading
/// `.` is matched by `*` too; callers wanting the shell's rule check it.
pub(crate) fn match_name(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| match_name(rest, &name[i..])),
        Some((b'?', rest)) => !name.is_empty() && match_name(rest, &name[1..]),
        Some((b'\\', rest)) if !rest.is_empty() => {
            name.first() == Some(&rest[0]) && match_name(&rest[1..], &name[1..])
        }
        Some((b'[', rest)) => {
            let Some(end) = rest.iter().skip(1).position(|&b| b == b']').map(|i| i + 1) else {
                return name.first() == Some(&b'[') && match_name(rest, &name[1..]);
            };
            let Some((&c, tail)) = name.split_first() else {
                return false;
            };
            let (negate, set) = match rest[..end].split_first() {
                Some((b'!' | b'^', set)) => (true, set),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= (set[i]..=set[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && match_name(&rest[end + 1..], tail)
        }
        Some((&b, rest)) => name.first() == Some(&b) && match_name(rest, &name[1..]),
    }
}
