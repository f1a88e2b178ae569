//! Containerfile step: reads a Containerfile (Dockerfile syntax) and builds
//! it as image definitions, one per stage. The file is lexed into
//! instructions (continuations joined, comments and the `# escape` and
//! `# syntax` directives read), grouped into stages at each FROM, and each
//! stage the target needs is translated into an [`ImageDef`] (variables
//! substituted where Docker substitutes them) and built by
//! [`crate::build`]: intermediate stages without the init, into the work
//! directory; a stage named by `FROM` is that build's base archive, one
//! named by `COPY --from` is its rootfs unpacked with the safe unpacker.
//! Stages the target does not need are never built.

use crate::def::{ConfigDef, CopyDef, ImageDef, RootfsDef, RunDef, Step};
use crate::dockerignore::Ignore;
use crate::error::{Error, Result};
use crate::{Built, Options};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The Containerfile.
    pub file: PathBuf,
    /// The build context: COPY and ADD sources are relative to it.
    pub context: PathBuf,
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// `--target STAGE`: the stage to stop at (the last one when None).
    pub target: Option<String>,
    /// The image's tag (`localhost/CONTEXT:latest` when None).
    pub tag: Option<String>,
    /// `--sbom`: attach an SBOM to the image written.
    pub sbom: bool,
}

/// A Containerfile, lexed.
#[derive(Debug, Clone)]
pub struct Containerfile {
    pub path: PathBuf,
    /// The ARGs before the first FROM.
    pub globals: Vec<Instruction>,
    pub stages: Vec<Stage>,
}

/// One instruction: its first line, keyword and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub line: usize,
    /// Uppercase.
    pub keyword: String,
    /// The rest, continuation lines joined.
    pub args: String,
}

/// A FROM and the instructions up to the next one.
#[derive(Debug, Clone)]
pub struct Stage {
    pub from: Instruction,
    /// `AS name`, lowercase.
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

/// Bytes of a Containerfile we read.
const MAX_SIZE: u64 = 4 << 20;

/// Builds the Containerfile `req.file` into `opts.output`.
pub fn build(req: &Request, opts: &Options) -> Result<Built> {
    let file = Containerfile::load(&req.file)?;
    let target = file.target(req.target.as_deref())?;
    let mut ignore = Ignore::load(&req.context)?;
    let work = crate::WorkDir::beside(&opts.output, crate::BUILD_PREFIX)?;
    exclude_own_files(&mut ignore, &req.context, &opts.output);
    let mut builder = Builder {
        file: &file,
        req,
        opts,
        work: work.path().to_path_buf(),
        ignore,
        globals: Vars::new(),
        used_args: BTreeSet::new(),
        built: HashMap::new(),
        rootfs: HashMap::new(),
        warnings: Vec::new(),
        scratch: 0,
    };
    builder.read_globals()?;
    let mut built = builder.stage(target, true)?.0;
    for name in req.build_args.keys() {
        if !builder.used_args.contains(name) {
            builder
                .warnings
                .push(format!("build argument `{name}` is not declared by an ARG"));
        }
    }
    built.warnings.splice(0..0, builder.warnings);
    Ok(built)
}

/// When the output goes into the context (`-o app.tar .`), the archive
/// and the work directories beside it are no sources: `COPY . /` would
/// copy the build into itself.
fn exclude_own_files(ignore: &mut Ignore, context: &Path, output: &Path) {
    let dir = crate::parent_of(output)
        .ok()
        .and_then(|d| d.canonicalize().ok());
    let (Some(dir), Ok(context)) = (dir, context.canonicalize()) else {
        return;
    };
    let Ok(rel) = dir.strip_prefix(&context) else {
        return;
    };
    let rel = rel.to_string_lossy();
    let name = output.file_name().unwrap_or_default().to_string_lossy();
    let mut escaped = String::new();
    // The name as it is: a `*` or `[` in it is no pattern.
    for c in name.chars() {
        if "*?[\\".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    ignore.exclude(&format!("{rel}/{escaped}"));
    for prefix in [
        crate::BUILD_PREFIX,
        crate::PULL_PREFIX,
        crate::PARTIAL_PREFIX,
    ] {
        ignore.exclude(&format!("{rel}/{prefix}*"));
    }
}

impl Containerfile {
    /// Reads and lexes the file at `path`.
    pub fn load(path: &Path) -> Result<Containerfile> {
        use std::io::Read;
        let read = Error::io("reading", path);
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SIZE + 1).read_to_string(&mut text))
            .map_err(read)?;
        if text.len() as u64 > MAX_SIZE {
            return Err(Error::io("reading", path)(std::io::Error::other(format!(
                "larger than {MAX_SIZE} bytes"
            ))));
        }
        Containerfile::parse(&text, path)
    }

    /// Lexes `text` (read from `path`, which errors name).
    pub fn parse(text: &str, path: &Path) -> Result<Containerfile> {
        let fail = |line: usize, instruction: &str, what: String| Error::Containerfile {
            path: path.to_path_buf(),
            line,
            instruction: instruction.to_string(),
            what,
        };
        let lines: Vec<&str> = text.lines().collect();
        // Parser directives come first, before any other line (a blank
        // line or a comment ends them), as BuildKit reads them.
        let mut first = 0;
        while let Some((name, value)) = lines.get(first).and_then(|l| directive(l)) {
            if name == "escape" && value != "\\" {
                return Err(fail(
                    first + 1,
                    "# escape",
                    format!("escape character `{value}` is not supported, only `\\`"),
                ));
            }
            first += 1;
        }
        let mut instructions = Vec::new();
        let mut pending: Option<(usize, String)> = None;
        for (n, line) in lines.iter().enumerate().skip(first) {
            let trimmed = line.trim();
            // Comments and blank lines, also inside a continuation.
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (start, mut joined) = pending.take().unwrap_or((n + 1, String::new()));
            let body = line.trim_end();
            match body.strip_suffix('\\') {
                Some(head) => {
                    joined.push_str(head);
                    pending = Some((start, joined));
                }
                None => {
                    joined.push_str(body);
                    instructions
                        .push(instruction(start, &joined).map_err(|(i, w)| fail(start, &i, w))?);
                }
            }
        }
        if let Some((start, joined)) = pending {
            instructions.push(instruction(start, &joined).map_err(|(i, w)| fail(start, &i, w))?);
        }
        let mut globals = Vec::new();
        let mut stages: Vec<Stage> = Vec::new();
        for ins in instructions {
            match (ins.keyword.as_str(), stages.last_mut()) {
                ("FROM", _) => {
                    let name =
                        stage_name(&ins.args).map_err(|what| fail(ins.line, &ins.keyword, what))?;
                    if let Some(name) = &name
                        && stages.iter().any(|s| s.name.as_ref() == Some(name))
                    {
                        return Err(fail(
                            ins.line,
                            "FROM",
                            format!("a stage is already named `{name}`"),
                        ));
                    }
                    stages.push(Stage {
                        from: ins,
                        name,
                        instructions: Vec::new(),
                    });
                }
                ("ARG", None) => globals.push(ins),
                (_, None) => {
                    return Err(fail(
                        ins.line,
                        &ins.keyword,
                        "comes before the first `FROM` (only ARG may)".into(),
                    ));
                }
                (_, Some(stage)) => stage.instructions.push(ins),
            }
        }
        if stages.is_empty() {
            return Err(fail(
                lines.len().max(1),
                "FROM",
                "there is no `FROM`".into(),
            ));
        }
        Ok(Containerfile {
            path: path.to_path_buf(),
            globals,
            stages,
        })
    }

    /// The index of the stage `target` names, or of the last one.
    pub fn target(&self, target: Option<&str>) -> Result<usize> {
        let Some(target) = target else {
            return Ok(self.stages.len() - 1);
        };
        self.stage_named(target)
            .ok_or_else(|| Error::Containerfile {
                path: self.path.clone(),
                line: 1,
                instruction: "--target".into(),
                what: format!("no stage is named `{target}`"),
            })
    }

    fn stage_named(&self, name: &str) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
    }
}

/// `# name=value` at the top of the file.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?;
    let (name, value) = rest.split_once('=')?;
    let name = name.trim();
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| (name.to_ascii_lowercase(), value.trim().to_string()))
}

/// One instruction from its joined text; the error is (instruction, what).
fn instruction(line: usize, text: &str) -> Result<Instruction, (String, String)> {
    let text = text.trim();
    let (keyword, args) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let keyword = keyword.to_ascii_uppercase();
    if !keyword.chars().all(|c| c.is_ascii_alphabetic()) {
        return Err((keyword, "is not an instruction".into()));
    }
    let args = args.trim().to_string();
    if matches!(keyword.as_str(), "RUN" | "COPY" | "ADD")
        && exec_form(&args).is_none()
        && let Some(at) = heredoc(&args)
    {
        return Err((
            keyword,
            format!("heredocs (`{at}`) are not supported; put the text in a file of the context"),
        ));
    }
    Ok(Instruction {
        line,
        keyword,
        args,
    })
}

/// The first `<<WORD` or `<<-WORD` (the word maybe quoted) in `args`.
fn heredoc(args: &str) -> Option<String> {
    let mut rest = args;
    while let Some(at) = rest.find("<<") {
        let after = rest[at + 2..].trim_start_matches('-');
        let after = after.trim_start_matches(['"', '\'']);
        if after.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
            let word: String = rest[at..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect();
            return Some(word);
        }
        rest = &rest[at + 2..];
    }
    None
}

/// The `AS name` of a FROM, lowercase.
fn stage_name(args: &str) -> Result<Option<String>, String> {
    let (_, rest) = take_flags(args);
    let words = split_words(rest)?;
    match words.as_slice() {
        [_] => Ok(None),
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let name = name.to_ascii_lowercase();
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if valid {
                Ok(Some(name))
            } else {
                Err(format!(
                    "`{name}` is not a stage name (a letter, then letters, digits, `_`, `.`, `-`)"
                ))
            }
        }
        _ => Err("takes `IMAGE [AS NAME]`".into()),
    }
}

/// The exec (JSON) form of `args`, when it is one.
fn exec_form(args: &str) -> Option<Vec<String>> {
    args.trim_start()
        .starts_with('[')
        .then(|| serde_json::from_str::<Vec<String>>(args.trim()).ok())
        .flatten()
}

/// Leading `--name[=value]` words, and the rest of `args`.
fn take_flags(args: &str) -> (Vec<(String, Option<String>)>, &str) {
    let mut flags = Vec::new();
    let mut rest = args.trim_start();
    while let Some(flag) = rest.strip_prefix("--") {
        let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
        let (name, value) = match flag[..end].split_once('=') {
            Some((name, value)) => (name.to_ascii_lowercase(), Some(value.to_string())),
            None => (flag[..end].to_ascii_lowercase(), None),
        };
        flags.push((name, value));
        rest = flag[end..].trim_start();
    }
    (flags, rest)
}

/// Variables an instruction sees, by name.
type Vars = BTreeMap<String, String>;

/// `text` split at unquoted whitespace; quotes and escapes are kept for
/// [`expand`].
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            word.push(c);
            escaped = false;
            continue;
        }
        match (quote, c) {
            (q, '\\') if q != Some('\'') => {
                word.push(c);
                escaped = true;
                in_word = true;
            }
            (None, '\'' | '"') => {
                quote = Some(c);
                word.push(c);
                in_word = true;
            }
            (Some(q), c) if c == q => {
                quote = None;
                word.push(c);
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (_, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in `{text}`"));
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// One word with its quotes removed, escapes applied and variables
/// substituted, as Docker's shell lexer does: `$NAME`, `${NAME}`,
/// `${NAME:-default}`, `${NAME:+alternative}` (and without the `:`, for a
/// set but empty variable); nothing inside single quotes; `\$` is a `$`.
fn expand(word: &str, vars: &Vars) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                out.push(chars[i + 1]);
                i += 2;
            }
            '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&c| c == '\'')
                    .ok_or_else(|| format!("unterminated quote in `{word}`"))?;
                out.extend(&chars[i + 1..i + 1 + end]);
                i += end + 2;
            }
            '"' => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated quote in `{word}`")),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '$' | '\\')) => {
                            out.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('$') => i = variable(&chars, i, vars, &mut out, word)?,
                        Some(&c) => {
                            out.push(c);
                            i += 1;
                        }
                    }
                }
            }
            '$' => i = variable(&chars, i, vars, &mut out, word)?,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Substitutes the variable at `chars[at]` (a `$`) into `out`; returns
/// the index after it.
fn variable(
    chars: &[char],
    at: usize,
    vars: &Vars,
    out: &mut String,
    word: &str,
) -> Result<usize, String> {
    let is_name = |c: &char| c.is_ascii_alphanumeric() || *c == '_';
    match chars.get(at + 1) {
        Some('{') => {
            let start = at + 2;
            let end = start + chars[start..].iter().take_while(|c| is_name(c)).count();
            let name: String = chars[start..end].iter().collect();
            let bad = || format!("bad substitution in `{word}`");
            if name.is_empty() {
                return Err(bad());
            }
            let value = vars.get(&name);
            if chars.get(end) == Some(&'}') {
                out.push_str(value.map_or("", String::as_str));
                return Ok(end + 1);
            }
            let colon = chars.get(end) == Some(&':');
            let op_at = end + usize::from(colon);
            let op = *chars.get(op_at).ok_or_else(bad)?;
            // The word runs to the matching `}`.
            let mut depth = 1;
            let mut close = op_at + 1;
            while close < chars.len() {
                match chars[close] {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                close += 1;
            }
            if depth != 0 {
                return Err(bad());
            }
            let inner: String = chars[op_at + 1..close].iter().collect();
            let set = value.is_some_and(|v| !colon || !v.is_empty());
            match op {
                '-' if set => out.push_str(value.map_or("", String::as_str)),
                '-' => out.push_str(&expand(&inner, vars)?),
                '+' if set => out.push_str(&expand(&inner, vars)?),
                '+' => {}
                '?' if set => out.push_str(value.map_or("", String::as_str)),
                '?' => return Err(format!("`{name}`: {}", expand(&inner, vars)?)),
                _ => return Err(bad()),
            }
            Ok(close + 1)
        }
        Some(c) if c.is_ascii_alphabetic() || *c == '_' => {
            let end = at + 1 + chars[at + 1..].iter().take_while(|c| is_name(c)).count();
            let name: String = chars[at + 1..end].iter().collect();
            out.push_str(vars.get(&name).map_or("", String::as_str));
            Ok(end)
        }
        _ => {
            out.push('$');
            Ok(at + 1)
        }
    }
}

/// `NAME=value …` pairs (values expanded), or the old `NAME value` form:
/// ENV and LABEL.
fn pairs(args: &str, vars: &Vars) -> Result<Vec<(String, String)>, String> {
    let words = split_words(args)?;
    let Some(first) = words.first() else {
        return Err("takes NAME=VALUE pairs".into());
    };
    if !first.contains('=') {
        // `ENV NAME the rest of the line`.
        let (name, value) = args
            .trim()
            .split_once(char::is_whitespace)
            .ok_or("takes NAME=VALUE pairs, or NAME VALUE")?;
        return Ok(vec![(expand(name, vars)?, expand(value.trim(), vars)?)]);
    }
    words
        .iter()
        .map(|word| {
            let (name, value) = word
                .split_once('=')
                .ok_or_else(|| format!("`{word}` is not NAME=VALUE"))?;
            let name = expand(name, vars)?;
            if name.is_empty() {
                return Err(format!("`{word}` has no name"));
            }
            Ok((name, expand(value, vars)?))
        })
        .collect()
}

/// `path` lexically cleaned: absolute, no `.` or `..`, no trailing `/`.
fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `path` in the image, relative to `workdir` unless absolute.
fn in_image(workdir: &str, path: &str) -> String {
    if path.starts_with('/') {
        clean(path)
    } else {
        clean(&format!("{workdir}/{path}"))
    }
}

/// A COPY or ADD destination: relative to `workdir`, a directory (ending
/// in `/`) when it says so.
fn destination(workdir: &str, dest: &str) -> String {
    let dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.") || dest == "..";
    let mut path = in_image(workdir, dest);
    if dir && !path.ends_with('/') {
        path.push('/');
    }
    path
}

/// `PORT[/tcp|udp|sctp]`, made `PORT/tcp` when the protocol is missing.
fn port(text: &str) -> Result<String, String> {
    let (number, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    let ok = number.parse::<u16>().is_ok_and(|n| n > 0)
        && matches!(protocol.as_str(), "tcp" | "udp" | "sctp");
    if ok {
        Ok(format!("{number}/{protocol}"))
    } else {
        Err(format!("`{text}` is not PORT[/tcp|udp|sctp]"))
    }
}

/// What a stage leaves to a stage built FROM it, for that one's RUN steps.
#[derive(Debug, Clone, Default)]
struct Carried {
    env: Vec<(String, String)>,
    workdir: Option<String>,
    user: Option<String>,
}

/// A stage as it is translated.
struct State {
    def: ImageDef,
    /// ARGs declared in the stage, with their values.
    args: Vars,
    carried: Carried,
    /// What FROM named: where `--chown` names are looked up.
    base: (String, ImageRef),
}

impl State {
    /// What `$NAME` means here: the stage's ARGs under its ENV.
    fn vars(&self) -> Vars {
        let mut vars = self.args.clone();
        vars.extend(self.carried.env.iter().cloned());
        vars
    }

    fn workdir(&self) -> &str {
        self.carried.workdir.as_deref().unwrap_or("/")
    }

    fn push_copy(&mut self, copy: CopyDef) {
        self.def.steps.push(Step::Copy(self.def.copy.len()));
        self.def.copy.push(copy);
    }
}

/// Which image a FROM or `COPY --from` names.
#[derive(Debug, Clone)]
enum ImageRef {
    Stage(usize),
    Scratch,
    Archive(PathBuf),
    Registry(String),
}

struct Builder<'a> {
    file: &'a Containerfile,
    req: &'a Request,
    opts: &'a Options,
    /// Scratch space: stage archives, their rootfs, ADD's files.
    work: PathBuf,
    ignore: Ignore,
    /// The ARGs before the first FROM.
    globals: Vars,
    /// Build arguments some ARG declared.
    used_args: BTreeSet<String>,
    /// Stages built: their archive and what they leave.
    built: HashMap<usize, (PathBuf, Carried)>,
    /// Images unpacked for `COPY --from`, by what named them.
    rootfs: HashMap<String, PathBuf>,
    warnings: Vec<String>,
    /// For naming scratch directories.
    scratch: usize,
}

impl Builder<'_> {
    fn fail(&self, ins: &Instruction, what: impl Into<String>) -> Error {
        Error::Containerfile {
            path: self.file.path.clone(),
            line: ins.line,
            instruction: ins.keyword.clone(),
            what: what.into(),
        }
    }

    fn warn(&mut self, ins: &Instruction, what: &str) {
        self.warnings.push(format!(
            "`{}` line {}: `{}`: {what}",
            self.file.path.display(),
            ins.line,
            ins.keyword
        ));
    }

    fn scratch_dir(&mut self, what: &str) -> Result<PathBuf> {
        self.scratch += 1;
        let dir = self.work.join(format!("{what}-{}", self.scratch));
        std::fs::create_dir_all(&dir).map_err(Error::io("creating", &dir))?;
        Ok(dir)
    }

    /// The global ARGs: build arguments over their defaults.
    fn read_globals(&mut self) -> Result<()> {
        for ins in &self.file.globals {
            let declared = self.declare(ins, &self.globals.clone())?;
            self.globals.extend(declared);
        }
        Ok(())
    }

    /// The variables an ARG declares, with their values (a build argument
    /// over the default, else the global one of that name); one without
    /// either is declared but unset.
    fn declare(&mut self, ins: &Instruction, vars: &Vars) -> Result<Vars> {
        let words = split_words(&ins.args).map_err(|w| self.fail(ins, w))?;
        if words.is_empty() {
            return Err(self.fail(ins, "takes NAME[=DEFAULT]"));
        }
        let mut declared = Vars::new();
        for word in words {
            let (name, default) = match word.split_once('=') {
                Some((name, value)) => (name.to_string(), Some(value.to_string())),
                None => (word.clone(), None),
            };
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(self.fail(ins, format!("`{name}` is not a variable name")));
            }
            self.used_args.insert(name.clone());
            let mut scope = vars.clone();
            scope.extend(declared.clone());
            let value = match (self.req.build_args.get(&name), default) {
                (Some(given), _) => Some(given.clone()),
                (None, Some(default)) => {
                    Some(expand(&default, &scope).map_err(|w| self.fail(ins, w))?)
                }
                (None, None) => self.globals.get(&name).cloned(),
            };
            if let Some(value) = value {
                declared.insert(name, value);
            }
        }
        Ok(declared)
    }

    /// Builds stage `index` (the target when `last`) and returns it with
    /// what it leaves to stages built from it.
    fn stage(&mut self, index: usize, last: bool) -> Result<(Built, Carried)> {
        let stage = &self.file.stages[index];
        let (mut def, carried) = self.translate(index, last)?;
        // The SBOM describes the image written, not the stages on the way.
        def.sbom = last && self.req.sbom;
        let output = if last {
            self.opts.output.clone()
        } else {
            self.work.join(format!("stage-{index}.tar"))
        };
        let opts = Options {
            output,
            no_init: !last || self.opts.no_init,
            ..self.opts.clone()
        };
        let built = crate::build(&def, &opts).map_err(|source| Error::Stage {
            path: self.file.path.clone(),
            line: stage.from.line,
            stage: stage.name.clone().unwrap_or_else(|| index.to_string()),
            source: Box::new(source),
        })?;
        Ok((built, carried))
    }

    /// The archive of stage `index`, built the first time it is asked for.
    fn stage_archive(&mut self, index: usize) -> Result<(PathBuf, Carried)> {
        if let Some(done) = self.built.get(&index) {
            return Ok(done.clone());
        }
        let (built, carried) = self.stage(index, false)?;
        self.warnings.extend(built.warnings);
        self.built
            .insert(index, (built.output.clone(), carried.clone()));
        Ok((built.output, carried))
    }

    /// Which image `name` (expanded) is, seen from stage `from`: an
    /// earlier stage (by name, or by index when `by_index`), `scratch`, an
    /// image archive (a path: `/…`, `./…`, `../…` or `….tar`, relative to
    /// the context), or an image reference.
    fn image_ref(
        &self,
        ins: &Instruction,
        name: &str,
        from: usize,
        by_index: bool,
    ) -> Result<ImageRef> {
        let stage = self.file.stage_named(name).or_else(|| {
            by_index
                .then(|| name.parse::<usize>().ok())
                .flatten()
                .filter(|i| *i < self.file.stages.len())
        });
        if let Some(stage) = stage {
            if stage >= from {
                return Err(self.fail(
                    ins,
                    format!("stage `{name}` is not an earlier stage than this one"),
                ));
            }
            return Ok(ImageRef::Stage(stage));
        }
        if name == "scratch" {
            return Ok(ImageRef::Scratch);
        }
        let path = name
            .strip_prefix("oci-archive:")
            .or_else(|| name.strip_prefix("docker-archive:"));
        let is_path = path.is_some()
            || ["/", "./", "../"].iter().any(|p| name.starts_with(p))
            || name.ends_with(".tar");
        if is_path {
            let path = self.req.context.join(path.unwrap_or(name));
            if !crate::base::is_image_archive(&path) {
                return Err(self.fail(
                    ins,
                    format!(
                        "`{}` is not an image archive (an OCI layout or `docker save` tar)",
                        path.display()
                    ),
                ));
            }
            return Ok(ImageRef::Archive(path));
        }
        crate::registry::Reference::parse(name).map_err(|_| {
            self.fail(
                ins,
                format!("`{name}` is neither a stage nor an image reference"),
            )
        })?;
        Ok(ImageRef::Registry(name.to_string()))
    }

    /// Stage `index` as an image definition; the stages it needs are built.
    fn translate(&mut self, index: usize, last: bool) -> Result<(ImageDef, Carried)> {
        let stage = &self.file.stages[index];
        let from = &stage.from;
        let (flags, rest) = take_flags(&from.args);
        for (flag, value) in flags {
            match flag.as_str() {
                "platform" => self.warn(
                    from,
                    &format!(
                        "`--platform={}` is ignored: images are built for this machine",
                        value.unwrap_or_default()
                    ),
                ),
                _ => return Err(self.fail(from, format!("unknown flag `--{flag}`"))),
            }
        }
        let words = split_words(rest).map_err(|w| self.fail(from, w))?;
        let image = expand(&words[0], &self.globals).map_err(|w| self.fail(from, w))?;
        let base = self.image_ref(from, &image, index, false)?;
        let (source, carried) = match base.clone() {
            ImageRef::Stage(j) => {
                let (archive, carried) = self.stage_archive(j)?;
                (archive.display().to_string(), carried)
            }
            ImageRef::Scratch => ("scratch".to_string(), Carried::default()),
            ImageRef::Archive(path) => (path.display().to_string(), Carried::default()),
            ImageRef::Registry(reference) => (format!("docker://{reference}"), Carried::default()),
        };
        let tag = if last {
            self.tag()?
        } else {
            format!("localhost/cradle-stage-{index}:build")
        };
        let mut state = State {
            def: ImageDef {
                tag,
                rootfs: RootfsDef {
                    source,
                    sha256: None,
                    programs: Vec::new(),
                    optional_programs: Vec::new(),
                },
                copy: Vec::new(),
                run: Vec::new(),
                steps: Vec::new(),
                config: ConfigDef::default(),
                services: BTreeMap::new(),
                sbom: false,
                dir: self.req.context.clone(),
            },
            args: Vars::new(),
            carried,
            base: (image, base),
        };
        for ins in &stage.instructions {
            self.apply(&mut state, ins, index)?;
        }
        Ok((state.def, state.carried))
    }

    /// The final image's tag: `-t`, else `localhost/CONTEXT:latest`.
    fn tag(&self) -> Result<String> {
        let tag = match &self.req.tag {
            Some(tag) => tag.clone(),
            None => {
                let dir = std::path::absolute(&self.req.context)
                    .ok()
                    .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_lowercase()))
                    .unwrap_or_default();
                let name: String = dir
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || "._-".contains(c) {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect();
                let name = name.trim_matches(|c: char| !c.is_ascii_alphanumeric());
                format!(
                    "localhost/{}:latest",
                    if name.is_empty() { "image" } else { name }
                )
            }
        };
        crate::registry::Reference::parse(&tag)
            .map(|_| tag.clone())
            .map_err(|_| Error::Containerfile {
                path: self.file.path.clone(),
                line: 1,
                instruction: "--tag".into(),
                what: format!(
                    "`{tag}` is not an image reference ([REGISTRY/]REPOSITORY[:TAG], lowercase)"
                ),
            })
    }

    fn apply(&mut self, state: &mut State, ins: &Instruction, index: usize) -> Result<()> {
        let vars = state.vars();
        let word = |text: &str| expand(text.trim(), &vars).map_err(|w| self.fail(ins, w));
        match ins.keyword.as_str() {
            "ARG" => {
                let declared = self.declare(ins, &vars)?;
                state.args.extend(declared);
            }
            "ENV" => {
                for (name, value) in pairs(&ins.args, &vars).map_err(|w| self.fail(ins, w))? {
                    state.def.config.env.push(format!("{name}={value}"));
                    state.carried.env.retain(|(n, _)| *n != name);
                    state.carried.env.push((name, value));
                }
            }
            "LABEL" => {
                for (name, value) in pairs(&ins.args, &vars).map_err(|w| self.fail(ins, w))? {
                    state.def.config.labels.insert(name, value);
                }
            }
            "WORKDIR" => {
                let dir = in_image(state.workdir(), &word(&ins.args)?);
                state.def.config.workdir = Some(dir.clone());
                state.carried.workdir = Some(dir.clone());
                self.make_workdir(state, &dir)?;
            }
            "USER" => {
                let user = word(&ins.args)?;
                if user.is_empty() {
                    return Err(self.fail(ins, "takes USER[:GROUP]"));
                }
                state.def.config.user = Some(user.clone());
                state.carried.user = Some(user);
            }
            "EXPOSE" => {
                for each in split_words(&ins.args).map_err(|w| self.fail(ins, w))? {
                    let each = expand(&each, &vars).map_err(|w| self.fail(ins, w))?;
                    state
                        .def
                        .config
                        .expose
                        .push(port(&each).map_err(|w| self.fail(ins, w))?);
                }
            }
            "STOPSIGNAL" => state.def.config.stop_signal = Some(word(&ins.args)?),
            "CMD" => state.def.config.cmd = command(&ins.args),
            "ENTRYPOINT" => state.def.config.entrypoint = command(&ins.args),
            "RUN" => self.run(state, ins)?,
            "COPY" | "ADD" => self.copy(state, ins, index)?,
            "MAINTAINER" | "HEALTHCHECK" | "VOLUME" => {
                let what = match ins.keyword.as_str() {
                    "MAINTAINER" => "ignored (deprecated; use a LABEL)",
                    "HEALTHCHECK" => "ignored: OCI images have no health check",
                    _ => "ignored: a container's volumes are given when it runs",
                };
                self.warn(ins, what);
            }
            "SHELL" | "ONBUILD" => {
                return Err(self.fail(ins, "is not supported"));
            }
            "FROM" => unreachable!("FROM starts a stage"),
            _ => return Err(self.fail(ins, "is not an instruction")),
        }
        Ok(())
    }

    /// WORKDIR's directory, made by an empty copy: root's, 0755 (or as
    /// `layout` makes it, `/tmp` 1777). Not when a copy of this stage made
    /// it already: that one's owner and mode stay.
    fn make_workdir(&mut self, state: &mut State, dir: &str) -> Result<()> {
        let made = state.def.copy.iter().any(|c| {
            let dest = c.dest.trim_end_matches('/');
            dest == dir || dest.starts_with(&format!("{dir}/"))
        });
        if dir == "/" || made {
            return Ok(());
        }
        let mode = crate::layout::DIRS
            .iter()
            .find(|(known, _)| Path::new("/").join(known) == Path::new(dir))
            .map_or(0o755, |(_, mode)| *mode);
        let context = self.work.join("workdirs");
        let name = format!("{mode:04o}");
        let empty = context.join(&name);
        if !empty.is_dir() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&empty).map_err(Error::io("creating", &empty))?;
            std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(mode))
                .map_err(Error::io("setting the mode of", &empty))?;
        }
        state.push_copy(CopyDef {
            src: name,
            dest: dir.to_string(),
            owner: None,
            mode: None,
            exclude: Vec::new(),
            context: Some(context),
            ignore: None,
        });
        Ok(())
    }

    fn run(&mut self, state: &mut State, ins: &Instruction) -> Result<()> {
        let (flags, rest) = take_flags(&ins.args);
        let mut network = None;
        for (flag, value) in flags {
            match (flag.as_str(), value) {
                ("network", Some(value)) if value == "default" || value == "none" => {}
                ("network", Some(value)) => network = Some(value),
                _ => return Err(self.fail(ins, format!("flag `--{flag}` is not supported"))),
            }
        }
        // Docker gives RUN the stage's ARGs and ENV as its environment.
        let mut env: Vars = state.args.clone();
        env.extend(state.carried.env.iter().cloned());
        let (command, shell) = match exec_form(rest) {
            Some(argv) if argv.is_empty() => return Err(self.fail(ins, "has an empty command")),
            Some(argv) => (argv, None),
            None if rest.trim().is_empty() => return Err(self.fail(ins, "has no command")),
            None => (Vec::new(), Some(rest.trim().to_string())),
        };
        let run = RunDef {
            command,
            shell,
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            workdir: state.carried.workdir.clone(),
            user: state.carried.user.clone(),
            network,
        };
        state.def.steps.push(Step::Run(state.def.run.len()));
        state.def.run.push(run);
        Ok(())
    }

    fn copy(&mut self, state: &mut State, ins: &Instruction, index: usize) -> Result<()> {
        let add = ins.keyword == "ADD";
        let vars = state.vars();
        let (flags, rest) = take_flags(&ins.args);
        let (mut owner, mut mode, mut from, mut checksum) = (None, None, None, None);
        for (flag, value) in flags {
            let value = match &value {
                Some(v) => Some(expand(v, &vars).map_err(|w| self.fail(ins, w))?),
                None => None,
            };
            match (flag.as_str(), value) {
                ("chown", Some(v)) => owner = Some(self.owner(ins, &v, &state.base)?),
                ("chmod", Some(v)) => {
                    if u32::from_str_radix(&v, 8).map_or(true, |m| m > 0o7777) {
                        return Err(self.fail(ins, format!("`--chmod={v}` is not an octal mode")));
                    }
                    mode = Some(v);
                }
                ("from", Some(v)) if !add => from = Some(v),
                ("checksum", Some(v)) if add => checksum = Some(v),
                // Only how docker stores the layer; ours is the same.
                ("link", None) => {}
                _ => return Err(self.fail(ins, format!("flag `--{flag}` is not supported"))),
            }
        }
        // Both forms have their variables substituted.
        let words = match exec_form(rest) {
            Some(words) => words,
            None => split_words(rest).map_err(|w| self.fail(ins, w))?,
        };
        let words: Vec<String> = words
            .iter()
            .map(|w| expand(w, &vars))
            .collect::<Result<_, _>>()
            .map_err(|w| self.fail(ins, w))?;
        let Some((dest, sources)) = words.split_last().filter(|(_, s)| !s.is_empty()) else {
            return Err(self.fail(ins, "takes SOURCE… DEST"));
        };
        let dest = destination(state.workdir(), dest);
        if (sources.len() > 1 || sources.iter().any(|s| s.contains(['*', '?', '['])))
            && !dest.ends_with('/')
        {
            return Err(self.fail(
                ins,
                format!(
                    "with several sources or a glob, the destination `{dest}` must end with `/`"
                ),
            ));
        }
        let context = match &from {
            Some(name) => {
                let image = self.image_ref(ins, name, index, true)?;
                Some(self.rootfs_of(ins, name, image)?)
            }
            None => None,
        };
        for src in sources {
            // In an image a source is absolute: the root is the rootfs.
            let src = match &context {
                Some(root) => resolve_in_root(root, src)
                    .ok_or_else(|| self.fail(ins, format!("`{src}`: too many symlinks")))?,
                None => src.clone(),
            };
            let copy = CopyDef {
                src: src.clone(),
                dest: dest.clone(),
                owner: owner.clone(),
                mode: mode.clone(),
                exclude: Vec::new(),
                ignore: context.is_none().then(|| self.ignore.clone()),
                context: context.clone(),
            };
            let copy = if add && (src.starts_with("http://") || src.starts_with("https://")) {
                self.add_url(ins, copy, checksum.as_deref())?
            } else {
                self.check_source(ins, &src)?;
                if add && context.is_none() {
                    self.add_local(ins, copy)?
                } else {
                    copy
                }
            };
            crate::copy::check(&copy).map_err(|w| self.fail(ins, w))?;
            state.push_copy(copy);
        }
        Ok(())
    }

    /// `--chown=USER[:GROUP]` as numbers: names are looked up in the
    /// base image's `/etc/passwd` and `/etc/group` (a user alone takes its
    /// primary group, a number alone the same number, as docker does).
    /// What RUN steps of this stage add to them is not seen.
    fn owner(
        &mut self,
        ins: &Instruction,
        value: &str,
        base: &(String, ImageRef),
    ) -> Result<String> {
        let (user, group) = match value.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (value, None),
        };
        let number = |s: &str| s.parse::<u32>().ok();
        if let Some(uid) = number(user)
            && let Some(gid) = group.map_or(Some(uid), number)
        {
            return Ok(format!("{uid}:{gid}"));
        }
        if matches!(base.1, ImageRef::Scratch) {
            return Err(self.fail(
                ins,
                format!("`--chown={value}`: a stage FROM scratch has no /etc/passwd; give numbers"),
            ));
        }
        let root = self.rootfs_of(ins, &base.0, base.1.clone())?;
        let lookup = |db: &str, name: &str| -> Result<Option<(u32, u32)>> {
            let text = read_small(&root, db)?;
            Ok(text.lines().find_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                let id = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
                (fields.first() == Some(&name)).then(|| Some((id(2)?, id(3).unwrap_or(0))))?
            }))
        };
        let missing = |what: &str, name: &str, db: &str| {
            self.fail(
                ins,
                format!(
                    "`--chown={value}`: {what} `{name}` is not in /{db} of `{}` (what RUN steps add is not read; give numbers)",
                    base.0
                ),
            )
        };
        let (uid, primary) = match number(user) {
            Some(uid) => (uid, uid),
            None => {
                lookup("etc/passwd", user)?.ok_or_else(|| missing("user", user, "etc/passwd"))?
            }
        };
        let gid = match group {
            None => primary,
            Some(group) => match number(group) {
                Some(gid) => gid,
                None => {
                    lookup("etc/group", group)?
                        .ok_or_else(|| missing("group", group, "etc/group"))?
                        .0
                }
            },
        };
        Ok(format!("{uid}:{gid}"))
    }

    /// A source stays in the context: relative, no `..`.
    fn check_source(&self, ins: &Instruction, src: &str) -> Result<()> {
        let path = Path::new(src);
        if src.is_empty() || path.is_absolute() {
            return Err(self.fail(
                ins,
                format!("source `{src}` must be a path relative to the build context"),
            ));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(self.fail(
                ins,
                format!("source `{src}` has `..`: sources stay inside the build context"),
            ));
        }
        Ok(())
    }

    /// `ADD URL`: fetched (needs `--checksum=sha256:…`) into a scratch
    /// directory, copied from there; 0600 unless `--chmod`, as docker does.
    fn add_url(
        &mut self,
        ins: &Instruction,
        mut copy: CopyDef,
        checksum: Option<&str>,
    ) -> Result<CopyDef> {
        let url = copy.src.clone();
        let expected = checksum
            .and_then(|c| c.strip_prefix("sha256:"))
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| {
                self.fail(
                    ins,
                    format!("`{url}`: ADD of a URL needs `--checksum=sha256:…`"),
                )
            })?;
        crate::def::check_digest(&expected)?;
        let fetched = crate::fetch::download(
            &crate::def::Source::Url(url.clone()),
            &expected,
            &self.opts.fetch,
        )?;
        let fetched = crate::verify::sha256(fetched, &expected)?;
        let name = if copy.dest.ends_with('/') {
            url.split(['?', '#'])
                .next()
                .and_then(|u| u.rsplit('/').next())
                .filter(|n| !n.is_empty() && *n != "." && *n != "..")
                .unwrap_or("download")
                .to_string()
        } else {
            "download".to_string()
        };
        let dir = self.scratch_dir("add")?;
        std::fs::copy(fetched.path(), dir.join(&name))
            .map_err(Error::io("copying", fetched.path()))?;
        copy.src = name;
        copy.mode.get_or_insert_with(|| "0600".into());
        copy.context = Some(dir);
        copy.ignore = None;
        Ok(copy)
    }

    /// `ADD` of a tarball of the context: unpacked (as hostile input, with
    /// the builder's unpacker) into a scratch directory whose contents are
    /// copied to the destination directory. Anything else is copied as
    /// COPY would.
    fn add_local(&mut self, ins: &Instruction, mut copy: CopyDef) -> Result<CopyDef> {
        use std::io::Read;
        let rel = Path::new(&copy.src);
        if copy.src.contains(['*', '?', '[']) || self.ignore.excludes(rel) {
            return Ok(copy);
        }
        let shown = self.req.context.join(rel);
        let mut file = match crate::copy::open_beneath(&self.req.context, rel) {
            Ok(file) => file,
            // A directory, a symlink, a missing file: the copy says what.
            Err(_) => return Ok(copy),
        };
        let mut magic = [0u8; 512];
        let n = file
            .read(&mut magic)
            .map_err(Error::io("reading", &shown))?;
        let compressed =
            crate::unpack::Compression::detect(&magic[..n]) != crate::unpack::Compression::None;
        let tar = n >= 262 && &magic[257..262] == b"ustar";
        if !compressed && !tar {
            return Ok(copy);
        }
        let file = crate::copy::open_beneath(&self.req.context, rel)
            .map_err(Error::io("opening", &shown))?;
        let dir = self.scratch_dir("add")?;
        // Bounded as copies are: what it unpacks is copied next.
        let opts = crate::unpack::Options {
            max_size: crate::copy::max_size_from_env(),
            ..Default::default()
        };
        crate::unpack::extract(file, &dir, &opts)
            .map_err(|e| self.fail(ins, format!("unpacking `{}`: {e}", shown.display())))?;
        if !copy.dest.ends_with('/') {
            copy.dest.push('/');
        }
        copy.src = ".".into();
        copy.context = Some(dir);
        copy.ignore = None;
        Ok(copy)
    }

    /// The rootfs of the image `COPY --from` names, unpacked (layers in
    /// order, whiteouts applied, by the safe unpacker) the first time.
    fn rootfs_of(&mut self, ins: &Instruction, name: &str, image: ImageRef) -> Result<PathBuf> {
        let key = match &image {
            ImageRef::Stage(i) => format!("stage {i}"),
            _ => name.to_string(),
        };
        if let Some(dir) = self.rootfs.get(&key) {
            return Ok(dir.clone());
        }
        let archive = match image {
            ImageRef::Stage(i) => self.stage_archive(i)?.0,
            ImageRef::Archive(path) => path,
            ImageRef::Scratch => return Err(self.fail(ins, "`--from=scratch` has no files")),
            ImageRef::Registry(reference) => self.pull(&reference)?,
        };
        let dir = self.scratch_dir("rootfs")?;
        unpack_image(&archive, &dir)?;
        self.rootfs.insert(key, dir.clone());
        Ok(dir)
    }

    #[cfg(feature = "fetch")]
    fn pull(&mut self, reference: &str) -> Result<PathBuf> {
        let parsed = crate::registry::Reference::parse(reference)?;
        let output = self.scratch_dir("pull")?.join("image.tar");
        crate::registry::pull(&parsed, &output, &crate::registry::Options::default())?;
        Ok(output)
    }

    #[cfg(not(feature = "fetch"))]
    fn pull(&mut self, reference: &str) -> Result<PathBuf> {
        Err(Error::NoFetch {
            url: format!("docker://{reference}"),
        })
    }
}

/// `path` in the image unpacked at `root`, relative, with the symlinks on
/// its way resolved as the container would (an absolute target starts
/// again at `root`, `..` stops there), so that `COPY --from=build
/// /bin/app` works where `/bin` links to `usr/bin`. Only links are read,
/// none is followed on this machine; a component with a glob is kept as
/// it is. None after 40 links (a loop).
fn resolve_in_root(root: &Path, path: &str) -> Option<String> {
    use std::ffi::OsString;
    let components = |p: &Path| -> Vec<OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_os_string()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let mut pending: std::collections::VecDeque<OsString> = components(Path::new(path)).into();
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let here: PathBuf = resolved.iter().collect();
        let is_glob = part.to_string_lossy().contains(['*', '?', '[']);
        let link = (!is_glob)
            .then(|| std::fs::read_link(root.join(&here).join(&part)).ok())
            .flatten();
        match link {
            Some(target) => {
                links += 1;
                if links > 40 {
                    return None;
                }
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            None => resolved.push(part),
        }
    }
    let resolved: PathBuf = resolved.iter().collect();
    Some(if resolved.as_os_str().is_empty() {
        ".".into()
    } else {
        resolved.to_string_lossy().into_owned()
    })
}

/// The file `rel` of the unpacked image at `root` (its symlinks resolved
/// inside it), when it is a regular file: at most 1 MiB of it. Empty when
/// missing.
fn read_small(root: &Path, rel: &str) -> Result<String> {
    use std::io::Read;
    let Some(inside) = resolve_in_root(root, rel) else {
        return Ok(String::new());
    };
    let path = root.join(&inside);
    let file = match crate::copy::open_beneath(root, Path::new(&inside)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(Error::io("opening", &path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(1 << 20)
        .read_to_end(&mut bytes)
        .map_err(Error::io("reading", &path))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// CMD or ENTRYPOINT: the exec form as it is, the shell form under
/// `/bin/sh -c`.
fn command(args: &str) -> Vec<String> {
    match exec_form(args) {
        Some(argv) => argv,
        None if args.trim().is_empty() => Vec::new(),
        None => vec!["/bin/sh".into(), "-c".into(), args.trim().to_string()],
    }
}

/// Unpacks the image in `archive` into `dir`: each layer checked against
/// its digest, bottom first, whiteouts applied.
fn unpack_image(archive: &Path, dir: &Path) -> Result<()> {
    let image_archive = crate::archive::ImageArchive::open(archive)?;
    let image = image_archive.image(None)?;
    let opts = crate::unpack::Options {
        whiteouts: true,
        ..Default::default()
    };
    for layer in &image.layers {
        let mut reader = image_archive.layer_reader(layer)?;
        crate::unpack::extract(&mut reader, dir, &opts)?;
        reader.finish()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Containerfile> {
        Containerfile::parse(text, Path::new("Containerfile"))
    }

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn lexes_continuations_comments_and_stages() {
        let file = parse(
            "# syntax=docker/dockerfile:1\n\
             ARG BASE=scratch\n\
             \n\
             FROM $BASE AS Build\n\
             # a comment\n\
             run echo one \\\n\
             # inside a continuation\n\
             \x20   && echo two\n\
             FROM build\n\
             COPY --from=build /a /b\n",
        )
        .unwrap();
        assert_eq!(file.globals.len(), 1);
        assert_eq!(file.stages.len(), 2);
        assert_eq!(file.stages[0].name.as_deref(), Some("build"));
        let run = &file.stages[0].instructions[0];
        assert_eq!(run.line, 6);
        assert_eq!(run.keyword, "RUN");
        assert_eq!(run.args, "echo one     && echo two");
        assert_eq!(file.stages[1].instructions[0].line, 10);
        assert_eq!(file.target(Some("BUILD")).unwrap(), 0);
        assert_eq!(file.target(None).unwrap(), 1);
        assert!(file.target(Some("nope")).is_err());
    }

    #[test]
    fn refuses_what_it_cannot_read_naming_the_line_and_instruction() {
        let cases = [
            ("# escape=`\nFROM scratch\n", "line 1: `# escape`"),
            (
                "FROM scratch\nRUN <<EOF\necho hi\nEOF\n",
                "line 2: `RUN`: heredocs (`<<EOF`)",
            ),
            ("FROM scratch\nCOPY <<-'X' /a\n", "line 2: `COPY`: heredocs"),
            (
                "COPY a /a\nFROM scratch\n",
                "line 1: `COPY`: comes before the first `FROM`",
            ),
            (
                "FROM a AS x\nFROM b AS x\n",
                "line 2: `FROM`: a stage is already named `x`",
            ),
            ("FROM a AS 1x\n", "is not a stage name"),
            ("FROM a b\n", "takes `IMAGE [AS NAME]`"),
            ("# just a comment\n", "there is no `FROM`"),
            ("FROM scratch\nLABEL a=\"b\n", ""),
        ];
        for (text, want) in cases {
            match parse(text) {
                Err(e) => assert!(e.to_string().contains(want), "{text}: {e}"),
                Ok(file) if want.is_empty() => drop(file),
                Ok(_) => panic!("{text}: accepted"),
            }
        }
        // A shift in a shell command is no heredoc.
        assert!(parse("FROM scratch\nRUN echo $((1<<2))\n").is_ok());
    }

    #[test]
    fn substitutes_variables_as_docker_does() {
        let v = vars(&[("A", "x"), ("EMPTY", ""), ("P", "/srv")]);
        let cases = [
            ("$A", "x"),
            ("${A}y", "xy"),
            ("$Ay", ""),
            ("${MISSING:-def}", "def"),
            ("${EMPTY:-def}", "def"),
            ("${EMPTY-def}", ""),
            ("${A:-def}", "x"),
            ("${A:+alt}", "alt"),
            ("${MISSING:+alt}", ""),
            ("${MISSING:-$P/app}", "/srv/app"),
            ("'$A'", "$A"),
            ("\"$A b\"", "x b"),
            ("\\$A", "$A"),
            ("a\\ b", "a b"),
            ("cost$", "cost$"),
            ("\"q\\\"uote\"", "q\"uote"),
        ];
        for (word, want) in cases {
            assert_eq!(expand(word, &v).unwrap(), want, "{word}");
        }
        for bad in ["${A", "${}", "${A:?must be set}x", "'open"] {
            let _ = expand(bad, &v).map(|out| {
                assert!(bad.starts_with("${A:?"), "{bad} gave {out}");
            });
        }
        assert!(
            expand("${MISSING:?must be set}", &v)
                .unwrap_err()
                .contains("must be set")
        );
    }

    #[test]
    fn reads_env_and_label_pairs_in_both_forms() {
        let v = vars(&[("V", "1.2")]);
        assert_eq!(
            pairs("A=1 B=\"two words\" C=$V D='$V'", &v).unwrap(),
            [
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "1.2".into()),
                ("D".into(), "$V".into())
            ]
        );
        assert_eq!(
            pairs("GREETING hello   there $V", &v).unwrap(),
            [("GREETING".into(), "hello   there 1.2".into())]
        );
        assert!(pairs("=x", &v).is_err());
    }

    #[test]
    fn resolves_paths_against_the_workdir() {
        assert_eq!(in_image("/app", "sub"), "/app/sub");
        assert_eq!(in_image("/app", "../etc/./x"), "/etc/x");
        assert_eq!(in_image("/", "../../.."), "/");
        assert_eq!(destination("/app", "."), "/app/");
        assert_eq!(destination("/app", "conf/"), "/app/conf/");
        assert_eq!(destination("/app", "run.sh"), "/app/run.sh");
        assert_eq!(destination("/", "/"), "/");
        assert_eq!(port("80").unwrap(), "80/tcp");
        assert_eq!(port("53/UDP").unwrap(), "53/udp");
        assert!(port("0").is_err() && port("80/icmp").is_err() && port("http").is_err());
    }

    /// The definition stage `index` of `text` translates to (a stage
    /// that needs no other).
    fn translate(text: &str, args: &[(&str, &str)]) -> Result<ImageDef> {
        let dir = tempfile::tempdir().unwrap();
        let file = Containerfile::parse(text, Path::new("Containerfile"))?;
        let req = Request {
            file: dir.path().join("Containerfile"),
            context: dir.path().to_path_buf(),
            build_args: vars(args),
            target: None,
            tag: Some("localhost/t:1".into()),
            sbom: false,
        };
        let opts = Options {
            init: PathBuf::new(),
            output: dir.path().join("out.tar"),
            fetch: crate::fetch::Options::new(dir.path().join("cache")),
            epoch: 0,
            run: Default::default(),
            no_init: false,
        };
        let mut builder = Builder {
            file: &file,
            req: &req,
            opts: &opts,
            work: dir.path().join("work"),
            ignore: Ignore::default(),
            globals: Vars::new(),
            used_args: BTreeSet::new(),
            built: HashMap::new(),
            rootfs: HashMap::new(),
            warnings: Vec::new(),
            scratch: 0,
        };
        builder.read_globals()?;
        let last = file.stages.len() - 1;
        Ok(builder.translate(last, true)?.0)
    }

    #[test]
    fn run_steps_get_the_form_env_workdir_and_user_of_their_place() {
        let def = translate(
            "ARG V=1\nFROM scratch\nARG V\nARG SECRET_FREE\n\
             RUN echo \"$V\" > /v\n\
             ENV HOME=/root V=env\n\
             WORKDIR /srv\n\
             USER 7:7\n\
             RUN [\"/bin/tool\", \"$V\"]\n\
             RUN --network=host fetch\n",
            &[("V", "2")],
        )
        .unwrap();
        assert_eq!(
            def.steps,
            [Step::Run(0), Step::Copy(0), Step::Run(1), Step::Run(2)]
        );
        let first = &def.run[0];
        assert_eq!(first.shell.as_deref(), Some("echo \"$V\" > /v"));
        assert!(first.command.is_empty());
        assert_eq!(first.env, ["V=2"]);
        assert_eq!(
            (first.workdir.as_deref(), first.user.as_deref()),
            (None, None)
        );
        // Exec form: as written, `$V` left for no shell to expand.
        let second = &def.run[1];
        assert_eq!(second.command, ["/bin/tool", "$V"]);
        assert_eq!(second.shell, None);
        assert_eq!(second.env, ["HOME=/root", "V=env"]);
        assert_eq!(second.workdir.as_deref(), Some("/srv"));
        assert_eq!(second.user.as_deref(), Some("7:7"));
        assert_eq!(def.run[2].network.as_deref(), Some("host"));
        // WORKDIR made /srv with a copy of an empty directory.
        assert_eq!(def.copy[0].dest, "/srv");
        assert_eq!(def.config.env, ["HOME=/root", "V=env"]);
    }

    #[test]
    fn stage_args_come_from_build_args_defaults_or_the_global_scope() {
        let def = translate(
            "ARG G=global\nARG ONLY_GLOBAL=x\nFROM scratch\nARG G\nARG L=${G}-local\n\
             LABEL g=$G l=$L unseen=${ONLY_GLOBAL:-unset}\n",
            &[],
        )
        .unwrap();
        let labels: Vec<(&str, &str)> = def
            .config
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [("g", "global"), ("l", "global-local"), ("unseen", "unset")]
        );
        let def = translate(
            "FROM scratch\nARG G=default\nLABEL g=$G\n",
            &[("G", "given")],
        )
        .unwrap();
        assert_eq!(def.config.labels["g"], "given");
        let err = translate("FROM scratch\nARG 9x\n", &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2: `ARG`: `9x` is not a variable name"),
            "{err}"
        );
    }

    #[test]
    fn from_sources_resolve_symlinks_inside_the_rootfs_only() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::write(r.join("usr/bin/app"), b"app").unwrap();
        let link = |name: &str, to: &str| std::os::unix::fs::symlink(to, r.join(name)).unwrap();
        link("bin", "usr/bin");
        link("escape", "../../../../etc");
        link("abs", "/usr/bin/app");
        link("loop", "loop");
        let cases = [
            ("/bin/app", "usr/bin/app"),
            ("/abs", "usr/bin/app"),
            ("/escape/passwd", "etc/passwd"),
            ("/bin/../bin/*.so", "usr/bin/*.so"),
            ("/", "."),
            ("/../../x", "x"),
        ];
        for (path, want) in cases {
            assert_eq!(resolve_in_root(r, path).as_deref(), Some(want), "{path}");
        }
        assert_eq!(resolve_in_root(r, "/loop/x"), None);
    }

    #[test]
    fn commands_in_exec_and_shell_form() {
        assert_eq!(command("[\"/app\", \"-v\"]"), ["/app", "-v"]);
        assert_eq!(command("echo $HOME"), ["/bin/sh", "-c", "echo $HOME"]);
        // Not JSON after all: the shell form, as docker falls back.
        assert_eq!(command("[ -f x ]"), ["/bin/sh", "-c", "[ -f x ]"]);
        assert_eq!(
            take_flags("--chown=1:2 --link  a b"),
            (
                vec![("chown".into(), Some("1:2".into())), ("link".into(), None)],
                "a b"
            )
        );
    }
}
