//! The container's record, `containers/ID/config.json` in the state root:
//! its name, image, command and `--label`s, for the tools that list and
//! inspect containers. Written before the clone, for a container with
//! labels or `--keep`; it goes with the state directory (it stays with
//! `--keep`).

use crate::cache::Container;
use crate::{Error, Options, Result};
use std::collections::BTreeMap;

/// The file name of the record in the container's directory.
pub const RECORD: &str = "config.json";

/// `-l/--label KEY=VALUE` (or `KEY`, an empty value, as docker takes it),
/// checked: a key is not empty.
pub fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for label in labels {
        let (key, value) = label.split_once('=').unwrap_or((label, ""));
        if key.trim().is_empty() {
            return Err(Error::Flag {
                flag: "--label",
                value: label.clone(),
                why: "the key is empty".into(),
            });
        }
        out.insert(key.to_string(), value.to_string());
    }
    Ok(out)
}

/// Writes `container`'s record into its fresh directory, once. Not by
/// rename over an old one: ext4 flushes a file replaced that way at once
/// (auto_da_alloc), which cost the warm start 1.5 ms for the image record
/// (d6977e1).
pub fn write(container: &Container, opts: &Options) -> Result<()> {
    let labels = parse_labels(&opts.labels)?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let record = serde_json::json!({
        "Id": container.id,
        "Image": opts.image.to_string_lossy(),
        "Command": opts.command,
        "Labels": labels,
        "Created": created,
        "LauncherPid": std::process::id(),
    });
    let path = container.dir.join(RECORD);
    std::fs::write(&path, record.to_string()).map_err(Error::io("writing", &path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_read_like_dockers() {
        let labels = parse_labels(&["a=1".into(), "b".into(), "c=x=y".into()]).unwrap();
        assert_eq!(labels["a"], "1");
        assert_eq!(labels["b"], "");
        assert_eq!(labels["c"], "x=y");
        let err = parse_labels(&["=v".into()]).unwrap_err();
        assert_eq!(err.to_string(), "invalid --label `=v`: the key is empty");
    }
}
