//! The TOML subset service definitions are written in: `key = value` lines,
//! `# comments`, `[table]` headers one level deep, and values that are
//! strings (`"basic"` with `\\ \" \n \t` escapes, `'literal'`), integers,
//! booleans, arrays (across lines too) and inline tables. Anything else is
//! refused with the line it is on; a small parser of our own, because the
//! init links no TOML crate (it must stay small and dependency-free).

use crate::prelude::*;

/// A parsed value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Array(Vec<Value>),
    Table(Vec<(String, Value)>),
}

/// A parse error: the 1-based line and what is wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole document into its top-level keys, in order; a `[name]`
/// section becomes a table under `name`.
pub fn parse(text: &str) -> Result<Vec<(String, Value)>, ParseError> {
    let mut p = Cursor {
        s: text.as_bytes(),
        i: 0,
        line: 1,
    };
    let mut top: Vec<(String, Value)> = Vec::new();
    let mut section: Option<usize> = None;
    loop {
        p.skip_blank_lines();
        let Some(c) = p.peek() else { break };
        if c == b'[' {
            p.i += 1;
            p.skip_spaces();
            let name = p.key()?;
            p.skip_spaces();
            p.expect(b']')?;
            p.end_of_line()?;
            if top.iter().any(|(k, _)| *k == name) {
                return Err(p.error(&format!("`{name}` is defined twice")));
            }
            top.push((name, Value::Table(Vec::new())));
            section = Some(top.len() - 1);
            continue;
        }
        let key = p.key()?;
        p.skip_spaces();
        p.expect(b'=')?;
        p.skip_spaces();
        let value = p.value()?;
        p.end_of_line()?;
        let into = match section {
            Some(at) => match &mut top[at].1 {
                Value::Table(t) => t,
                _ => return Err(p.error("internal: section is no table")),
            },
            None => &mut top,
        };
        if into.iter().any(|(k, _)| *k == key) {
            return Err(p.error(&format!("`{key}` is defined twice")));
        }
        into.push((key, value));
    }
    Ok(top)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
    line: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn error(&self, message: &str) -> ParseError {
        ParseError {
            line: self.line,
            message: message.into(),
        }
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_comment(&mut self) {
        if self.peek() == Some(b'#') {
            while !matches!(self.peek(), None | Some(b'\n')) {
                self.i += 1;
            }
        }
    }

    /// Spaces, comments and newlines (inside arrays and between lines).
    fn skip_blank_lines(&mut self) {
        loop {
            self.skip_spaces();
            self.skip_comment();
            match self.peek() {
                Some(b'\n') => {
                    self.i += 1;
                    self.line += 1;
                }
                Some(b'\r') if self.s.get(self.i + 1) == Some(&b'\n') => self.i += 1,
                _ => return,
            }
        }
    }

    fn end_of_line(&mut self) -> Result<(), ParseError> {
        self.skip_spaces();
        self.skip_comment();
        if self.peek() == Some(b'\r') {
            self.i += 1;
        }
        match self.peek() {
            None => Ok(()),
            Some(b'\n') => Ok(()),
            Some(c) => Err(self.error(&format!(
                "unexpected `{}` after the value",
                char::from(c).escape_default()
            ))),
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", char::from(c))))
        }
    }

    /// A bare key (letters, digits, `_`, `-`) or a quoted one.
    fn key(&mut self) -> Result<String, ParseError> {
        if matches!(self.peek(), Some(b'"' | b'\'')) {
            return match self.value()? {
                Value::Str(s) => Ok(s),
                _ => Err(self.error("expected a key")),
            };
        }
        let start = self.i;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        {
            self.i += 1;
        }
        if self.i == start {
            return Err(self.error("expected a key"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some(b'"') => self.basic_string().map(Value::Str),
            Some(b'\'') => self.literal_string().map(Value::Str),
            Some(b'[') => self.array(),
            Some(b'{') => self.inline_table(),
            Some(b't') if self.s[self.i..].starts_with(b"true") => {
                self.i += 4;
                Ok(Value::Bool(true))
            }
            Some(b'f') if self.s[self.i..].starts_with(b"false") => {
                self.i += 5;
                Ok(Value::Bool(false))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' || c == b'+' => self.integer(),
            _ => Err(self.error("expected a value (string, integer, boolean, array or table)")),
        }
    }

    fn integer(&mut self) -> Result<Value, ParseError> {
        let start = self.i;
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.i += 1;
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_digit() || c == b'_') {
            self.i += 1;
        }
        let text: String = self.s[start..self.i]
            .iter()
            .filter(|c| **c != b'_')
            .map(|c| char::from(*c))
            .collect();
        text.parse()
            .map(Value::Int)
            .map_err(|_| self.error(&format!("`{text}` is not an integer")))
    }

    fn basic_string(&mut self) -> Result<String, ParseError> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') => {
                    let c = self.s.get(self.i + 1).copied();
                    out.push(match c {
                        Some(b'\\') => b'\\',
                        Some(b'"') => b'"',
                        Some(b'n') => b'\n',
                        Some(b't') => b'\t',
                        _ => return Err(self.error("unsupported escape in string")),
                    });
                    self.i += 2;
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| self.error("string is not UTF-8"))
    }

    fn literal_string(&mut self) -> Result<String, ParseError> {
        self.i += 1;
        let start = self.i;
        while !matches!(self.peek(), None | Some(b'\n' | b'\'')) {
            self.i += 1;
        }
        if self.peek() != Some(b'\'') {
            return Err(self.error("unterminated string"));
        }
        let s = core::str::from_utf8(&self.s[start..self.i])
            .map_err(|_| self.error("string is not UTF-8"))?
            .into();
        self.i += 1;
        Ok(s)
    }

    fn array(&mut self) -> Result<Value, ParseError> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.skip_blank_lines();
            if self.peek() == Some(b']') {
                self.i += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.skip_blank_lines();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {}
                _ => return Err(self.error("expected `,` or `]` in array")),
            }
        }
    }

    fn inline_table(&mut self) -> Result<Value, ParseError> {
        self.i += 1;
        let mut items: Vec<(String, Value)> = Vec::new();
        loop {
            self.skip_spaces();
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(Value::Table(items));
            }
            let key = self.key()?;
            self.skip_spaces();
            self.expect(b'=')?;
            self.skip_spaces();
            let value = self.value()?;
            if items.iter().any(|(k, _)| *k == key) {
                return Err(self.error(&format!("`{key}` is defined twice")));
            }
            items.push((key, value));
            self.skip_spaces();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(self.error("expected `,` or `}` in inline table")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    #[test]
    fn parses_the_subset() {
        let doc = parse(
            "# web\ncommand = [\"/bin/sh\", '-c',\n  \"echo \\\"hi\\\"\", ] # x\n\
             type = \"longrun\"\nstop_timeout = 1_000\ncritical = true\n\
             ready = { tcp = 8080 }\n[env]\nA = \"1\"\n",
        )
        .unwrap();
        assert_eq!(
            doc,
            [
                (
                    "command".into(),
                    Value::Array(vec![s("/bin/sh"), s("-c"), s("echo \"hi\"")])
                ),
                ("type".into(), s("longrun")),
                ("stop_timeout".into(), Value::Int(1000)),
                ("critical".into(), Value::Bool(true)),
                (
                    "ready".into(),
                    Value::Table(vec![("tcp".into(), Value::Int(8080))])
                ),
                ("env".into(), Value::Table(vec![("A".into(), s("1"))])),
            ]
        );
    }

    #[test]
    fn refuses_with_the_line() {
        for (text, line, what) in [
            ("a = 1\nb = \"x", 2, "unterminated"),
            ("a = 1\na = 2", 2, "defined twice"),
            ("a = 1 2", 1, "after the value"),
            ("\n\nx = nope", 3, "expected a value"),
            ("a = [1 2]", 1, "expected `,`"),
            ("= 1", 1, "expected a key"),
            ("a = 99999999999999999999", 1, "not an integer"),
        ] {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err:?}");
            assert!(err.message.contains(what), "{text:?}: {err:?}");
        }
    }
}
