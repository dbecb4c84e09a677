//! Protobuf text format (as used by Caffe's `.prototxt` files) -> a schema-free tree with spans.
//!
//! The lexemes (whitespace and `#` comments, identifiers, numbers, signs, punctuation) are `nom`
//! parsers over `&str`; the block structure is a small recursive descent on top of them. Positions
//! are kept as byte offsets while parsing and turned into 1-based line:column [`Span`]s through a
//! line-start table, so nothing is counted per character.
//!
//! Field types are not known here: [`crate::format::transcode`] checks the tree against a message
//! descriptor. Integers keep their text as written so range errors can quote it.

use std::fmt;

use nom::{
    IResult, Parser,
    branch::alt,
    bytes::complete::{take_while, take_while1},
    character::complete::{char, digit0, digit1, hex_digit1, one_of, satisfy},
    combinator::opt,
    error::{ErrorKind, ParseError},
    multi::many0_count,
    sequence::pair,
};

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A scalar token.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// An identifier: enum names, `true`/`false`, `inf`, `nan`, ... A leading minus sign is kept
    /// (`-inf`).
    Ident(String),
    /// An integer literal (decimal, `0x` hex or leading-zero octal). `raw` is the text as written,
    /// sign included; `value` is its value, saturated at `i128::MAX` / `i128::MIN` when the literal is
    /// too large (so every integer range check rejects it).
    Int { raw: String, value: i128 },
    /// A floating-point literal (`1.`, `.5`, `1e-3`, `2.5f`, ...); `raw` as written, sign included.
    Float { raw: String, value: f64 },
    /// A string after C-escape decoding and concatenation of adjacent literals.
    Str(Vec<u8>),
}

impl Scalar {
    /// Short human description used in error messages: the token as written (quoted) or
    /// `a string`.
    pub fn describe(&self) -> String {
        match self {
            Scalar::Ident(s) => format!("\"{s}\""),
            Scalar::Int { raw, .. } | Scalar::Float { raw, .. } => format!("\"{raw}\""),
            Scalar::Str(_) => "a string".to_string(),
        }
    }
}

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `name: value`; the span is the token's start (its sign when negative).
    Scalar(Scalar, Span),
    /// `name { ... }` / `name: < ... >`; the span is the opening brace.
    Message(Vec<Field>, Span),
    /// `name: [a, b]` / `name [ {..}, {..} ]`; elements are `Scalar` or `Message` values; the span
    /// is the `[`.
    List(Vec<Value>, Span),
}

impl Value {
    pub fn span(&self) -> Span {
        match self {
            Value::Scalar(_, s) | Value::Message(_, s) | Value::List(_, s) => *s,
        }
    }
}

/// One `name: value` / `name { ... }` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub name_span: Span,
    /// Whether a `:` followed the name (required before scalars, optional before messages).
    pub colon: bool,
    pub value: Value,
}

/// A syntax error with its 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextError {
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl TextError {
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        TextError {
            line: span.line,
            col: span.col,
            message: message.into(),
        }
    }
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

impl std::error::Error for TextError {}

/// Maximum nesting of `{ }` blocks and lists (C++ protobuf's default recursion limit).
pub const MAX_DEPTH: usize = 100;

/// Parse a whole text-format document into its top-level fields.
pub fn parse(src: &str) -> Result<Vec<Field>, TextError> {
    let ctx = Ctx::new(src);
    match ctx.fields(src, None, 0) {
        Ok((_, fields)) => Ok(fields),
        Err(nom::Err::Error(e)) | Err(nom::Err::Failure(e)) => Err(ctx.error(e)),
        Err(nom::Err::Incomplete(_)) => {
            Err(TextError::new(ctx.span_of(""), "unexpected end of input"))
        }
    }
}

/// Maps byte offsets of one source text to line:column.
pub struct LineIndex<'s> {
    src: &'s str,
    /// Byte offset of the start of each line.
    starts: Vec<usize>,
    /// Whether the text is pure ASCII (then columns are byte differences).
    ascii: bool,
    /// The line (0-based) of the last lookup: spans are mostly asked for in increasing order.
    hint: std::cell::Cell<usize>,
}

impl<'s> LineIndex<'s> {
    pub fn new(src: &'s str) -> Self {
        let mut starts = Vec::with_capacity(src.len() / 32 + 1);
        starts.push(0);
        starts.extend(
            src.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        LineIndex {
            src,
            starts,
            ascii: src.is_ascii(),
            hint: std::cell::Cell::new(0),
        }
    }

    /// Span of a byte offset (clamped to the text).
    pub fn span(&self, offset: usize) -> Span {
        let offset = offset.min(self.src.len());
        let in_line = |l: usize| {
            self.starts.get(l).is_some_and(|&s| s <= offset)
                && self.starts.get(l + 1).is_none_or(|&next| offset < next)
        };
        let hint = self.hint.get();
        // 0-based line: the hinted one or the next few, else a binary search.
        let line = (hint..hint + 4).find(|&l| in_line(l)).unwrap_or_else(|| {
            self.starts
                .partition_point(|&s| s <= offset)
                .saturating_sub(1)
        });
        self.hint.set(line);
        let start = self.starts.get(line).copied().unwrap_or(0);
        let col = if self.ascii {
            offset - start.min(offset)
        } else {
            match self.src.get(start..offset) {
                Some(s) => s.chars().count(),
                None => offset - start.min(offset),
            }
        };
        Span {
            line: u32::try_from(line + 1).unwrap_or(u32::MAX),
            col: u32::try_from(col + 1).unwrap_or(u32::MAX),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nom plumbing

/// Parse error carrying the position (as the length of the remaining input) and a message. An
/// empty message means "this alternative does not match" (only ever seen as `nom::Err::Error`).
#[derive(Debug)]
struct PErr {
    rest_len: usize,
    msg: String,
}

impl<'a> ParseError<&'a str> for PErr {
    fn from_error_kind(input: &'a str, _kind: ErrorKind) -> Self {
        PErr {
            rest_len: input.len(),
            msg: String::new(),
        }
    }

    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

type PResult<'a, T> = IResult<&'a str, T, PErr>;

/// A hard error at `at` (the remaining input where the problem starts).
fn fail<T>(at: &str, msg: impl Into<String>) -> PResult<'_, T> {
    Err(nom::Err::Failure(PErr {
        rest_len: at.len(),
        msg: msg.into(),
    }))
}

/// What `p` consumed. Like `nom::combinator::recognize`, but measured by length: nom 8.0.0's
/// `&str` complete-mode splitting returns an end-of-input remainder that does not point into the
/// input, which makes the pointer-based `recognize` return an empty match.
fn consumed<'a, O, P>(mut p: P) -> impl FnMut(&'a str) -> PResult<'a, &'a str>
where
    P: Parser<&'a str, Output = O, Error = PErr>,
{
    move |i: &'a str| {
        let (rest, _) = p.parse(i)?;
        let n = i.len().saturating_sub(rest.len());
        Ok((rest, i.get(..n).unwrap_or(i)))
    }
}

/// Whitespace as C's `isspace` has it, plus a byte-order mark.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c' | '\u{feff}')
}

/// Whitespace and `#` comments (to end of line).
fn ws(i: &str) -> &str {
    let comment = consumed(pair(char('#'), take_while(|c| c != '\n')));
    match many0_count(alt((take_while1::<_, &str, PErr>(is_space), comment))).parse(i) {
        Ok((rest, _)) => rest,
        Err(_) => i,
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn ident(i: &str) -> PResult<'_, &str> {
    consumed(pair(satisfy(is_ident_start), take_while(is_ident_char))).parse(i)
}

/// Characters that can start some token; anything else is reported as unexpected.
fn is_known_char(c: char) -> bool {
    is_ident_char(c)
        || is_space(c)
        || matches!(
            c,
            '"' | '\''
                | '{'
                | '}'
                | '<'
                | '>'
                | '['
                | ']'
                | ':'
                | ','
                | ';'
                | '-'
                | '.'
                | '#'
                | '+'
        )
}

/// How to show the token at the start of `i` in an error message.
fn describe_next(i: &str) -> String {
    match i.chars().next() {
        None => "end of input".to_string(),
        Some(c) if is_ident_char(c) => {
            let tok: String = i
                .chars()
                .take_while(|&c| is_ident_char(c) || c == '.')
                .collect();
            format!("\"{tok}\"")
        }
        Some(c @ ('"' | '\'')) => format!("a string starting with {c}"),
        Some(c) if is_known_char(c) => format!("\"{c}\""),
        Some(c) => format!("unexpected character {c:?}"),
    }
}

/// Error for an unexpected token: unknown characters get their own message.
fn unexpected<'a, T>(i: &'a str, expected: &str) -> PResult<'a, T> {
    match i.chars().next() {
        Some(c) if !is_known_char(c) => fail(i, format!("unexpected character {c:?}")),
        _ => fail(i, format!("{expected}, got {}", describe_next(i))),
    }
}

fn parse_digits(digits: &str, radix: u32) -> u128 {
    let mut v: u128 = 0;
    for c in digits.chars() {
        let d = u128::from(c.to_digit(radix).unwrap_or(0));
        v = match v
            .checked_mul(u128::from(radix))
            .and_then(|v| v.checked_add(d))
        {
            Some(v) => v,
            None => return u128::MAX,
        };
    }
    v
}

fn to_i128(v: u128, negative: bool) -> i128 {
    let v = i128::try_from(v).unwrap_or(i128::MAX);
    if negative { -v } else { v }
}

/// After a number: a letter, digit or `_` right behind it is an error (`12abc`).
fn number_end(r: &str) -> PResult<'_, ()> {
    match r.chars().next() {
        Some(c) if is_ident_char(c) => fail(r, "need space between number and identifier"),
        _ => Ok((r, ())),
    }
}

/// An unsigned numeric literal. `Err::Error` when `i` does not start a number.
fn number(i: &str) -> PResult<'_, Scalar> {
    let start = i;
    // Hexadecimal.
    if let Ok((r, _)) = pair(char::<&str, PErr>('0'), one_of("xX")).parse(i) {
        let Ok((r, digits)) = hex_digit1::<&str, PErr>(r) else {
            return fail(start, "\"0x\" must be followed by hex digits");
        };
        let (r, ()) = number_end(r)?;
        let raw = &start[..start.len() - r.len()];
        let value = to_i128(parse_digits(digits, 16), false);
        return Ok((
            r,
            Scalar::Int {
                raw: raw.to_string(),
                value,
            },
        ));
    }
    let (r, mantissa) = consumed(pair(digit0, opt(pair(char('.'), digit0)))).parse(i)?;
    if !mantissa.bytes().any(|b| b.is_ascii_digit()) {
        return Err(nom::Err::Error(PErr {
            rest_len: i.len(),
            msg: String::new(),
        }));
    }
    let mut is_float = mantissa.contains('.');
    let mut r = r;
    if let Ok((after_e, _)) = one_of::<&str, &str, PErr>("eE").parse(r) {
        let (after_sign, _) = opt(one_of("+-")).parse(after_e)?;
        match digit1::<&str, PErr>(after_sign) {
            Ok((after_exp, _)) => r = after_exp,
            Err(_) => return fail(r, "\"e\" must be followed by an exponent"),
        }
        is_float = true;
    }
    let num_text = &start[..start.len() - r.len()];
    if let Ok((after_f, _)) = one_of::<&str, &str, PErr>("fF").parse(r) {
        r = after_f;
        is_float = true;
    }
    let (r, ()) = number_end(r)?;
    let raw = &start[..start.len() - r.len()];
    if is_float {
        let value = match num_text.parse::<f64>() {
            Ok(v) => v,
            Err(_) => return fail(start, format!("invalid number \"{raw}\"")),
        };
        return Ok((
            r,
            Scalar::Float {
                raw: raw.to_string(),
                value,
            },
        ));
    }
    let value = if raw.len() > 1 && raw.starts_with('0') {
        if !raw.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return fail(
                start,
                "numbers starting with a leading zero must be in octal",
            );
        }
        parse_digits(&raw[1..], 8)
    } else {
        parse_digits(raw, 10)
    };
    Ok((
        r,
        Scalar::Int {
            raw: raw.to_string(),
            value: to_i128(value, false),
        },
    ))
}

/// Number of hex digits (at most `max`) at the start of `s`.
fn hex_prefix(s: &[u8], max: usize) -> usize {
    s.iter()
        .take(max)
        .take_while(|b| b.is_ascii_hexdigit())
        .count()
}

/// One quoted string literal (single or double quotes) with C escapes, appended to `out`.
fn string_literal<'a>(i: &'a str, out: &mut Vec<u8>) -> PResult<'a, ()> {
    let bytes = i.as_bytes();
    let Some(&quote) = bytes.first() else {
        return fail(i, "expected a string");
    };
    let mut k = 1;
    loop {
        // Copy the run of plain bytes in one go.
        let run = bytes
            .get(k..)
            .unwrap_or(&[])
            .iter()
            .position(|&b| b == quote || b == b'\\' || b == b'\n');
        let Some(run) = run else {
            return fail(i, "unterminated string");
        };
        out.extend_from_slice(&bytes[k..k + run]);
        k += run;
        match bytes[k] {
            b'\n' => return fail(i, "unterminated string (strings cannot span lines)"),
            b'\\' => {
                let esc_at = &i[k..];
                let Some(&e) = bytes.get(k + 1) else {
                    return fail(i, "unterminated string");
                };
                k += 2;
                match e {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'r' => out.push(b'\r'),
                    b'a' => out.push(0x07),
                    b'b' => out.push(0x08),
                    b'f' => out.push(0x0c),
                    b'v' => out.push(0x0b),
                    b'\\' | b'\'' | b'"' | b'?' => out.push(e),
                    b'0'..=b'7' => {
                        let mut v: u32 = u32::from(e - b'0');
                        let mut n = 1;
                        while n < 3 {
                            match bytes.get(k) {
                                Some(&d @ b'0'..=b'7') => {
                                    v = v * 8 + u32::from(d - b'0');
                                    k += 1;
                                    n += 1;
                                }
                                _ => break,
                            }
                        }
                        if v > 0xff {
                            return fail(
                                esc_at,
                                format!("octal escape \"{}\" out of range", &esc_at[..n + 1]),
                            );
                        }
                        out.push(v as u8);
                    }
                    b'x' | b'X' => {
                        let n = hex_prefix(bytes.get(k..).unwrap_or(&[]), 2);
                        if n == 0 {
                            return fail(
                                esc_at,
                                "invalid escape sequence \"\\x\": expected hex digits",
                            );
                        }
                        out.push(parse_digits(&i[k..k + n], 16) as u8);
                        k += n;
                    }
                    b'u' | b'U' => {
                        let want = if e == b'u' { 4 } else { 8 };
                        let n = hex_prefix(bytes.get(k..).unwrap_or(&[]), want);
                        let c = if n == want {
                            char::from_u32(parse_digits(&i[k..k + n], 16) as u32)
                        } else {
                            None
                        };
                        let Some(c) = c else {
                            return fail(
                                esc_at,
                                format!(
                                    "invalid escape sequence \"\\{}\": expected {want} hex digits of a valid code point",
                                    e as char
                                ),
                            );
                        };
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        k += n;
                    }
                    _ => {
                        let shown: String = esc_at.chars().take(2).collect();
                        return fail(esc_at, format!("invalid escape sequence \"{shown}\""));
                    }
                }
            }
            _ => {
                // The closing quote.
                return Ok((&i[k + 1..], ()));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Structure

struct Ctx<'s> {
    src: &'s str,
    lines: LineIndex<'s>,
}

/// What closes the block being parsed: the closing character, the field's name and where it was
/// opened.
struct Closer<'a> {
    close: char,
    name: &'a str,
    opened: Span,
}

impl<'s> Ctx<'s> {
    fn new(src: &'s str) -> Self {
        Ctx {
            src,
            lines: LineIndex::new(src),
        }
    }

    fn offset(&self, rest: &str) -> usize {
        self.src.len().saturating_sub(rest.len())
    }

    fn span_of(&self, rest: &str) -> Span {
        self.lines.span(self.offset(rest))
    }

    fn error(&self, e: PErr) -> TextError {
        let span = self.lines.span(self.src.len().saturating_sub(e.rest_len));
        let msg = if e.msg.is_empty() {
            "syntax error".to_string()
        } else {
            e.msg
        };
        TextError::new(span, msg)
    }

    /// Fields until end of input (`closer == None`) or the closing character.
    fn fields<'a>(
        &self,
        mut i: &'a str,
        closer: Option<&Closer<'_>>,
        depth: usize,
    ) -> PResult<'a, Vec<Field>> {
        let mut fields = Vec::new();
        loop {
            i = ws(i);
            let Some(c) = i.chars().next() else {
                return match closer {
                    None => Ok((i, fields)),
                    Some(cl) => fail(
                        i,
                        format!(
                            "expected \"{}\" to close \"{}\" opened at {}, got end of input",
                            cl.close, cl.name, cl.opened
                        ),
                    ),
                };
            };
            match (c, closer) {
                (c, Some(cl)) if c == cl.close => return Ok((&i[1..], fields)),
                ('}' | '>', Some(cl)) => {
                    return fail(
                        i,
                        format!(
                            "expected \"{}\" to close \"{}\" opened at {}, got \"{c}\"",
                            cl.close, cl.name, cl.opened
                        ),
                    );
                }
                ('}' | '>', None) => {
                    return fail(i, format!("unexpected \"{c}\" with no open block"));
                }
                ('[', _) => {
                    return fail(
                        i,
                        "extension and Any field names in [brackets] are not supported",
                    );
                }
                _ => {}
            }
            let (rest, field) = self.field(i, depth)?;
            fields.push(field);
            i = ws(rest);
            if let Some(r) = i.strip_prefix([',', ';']) {
                i = r;
            }
        }
    }

    /// One field: name, optional colon, value.
    fn field<'a>(&self, i: &'a str, depth: usize) -> PResult<'a, Field> {
        let name_at = i;
        let (i, name) = match ident(i) {
            Ok(ok) => ok,
            Err(_) => return unexpected(i, "expected a field name"),
        };
        let name_span = self.span_of(name_at);
        let i = ws(i);
        let (i, colon) = match i.strip_prefix(':') {
            Some(r) => (ws(r), true),
            None => (i, false),
        };
        let (i, value) = match i.chars().next() {
            Some('{' | '<') => self.message(i, name, name_span, depth)?,
            Some('[') => self.list(i, name, name_span, depth)?,
            _ if colon => match self.scalar(i) {
                Ok(ok) => ok,
                Err(nom::Err::Error(_)) => {
                    return unexpected(i, "expected a value after \":\"");
                }
                Err(e) => return Err(e),
            },
            _ => {
                return unexpected(
                    i,
                    &format!("expected \":\" or \"{{\" after field name \"{name}\""),
                );
            }
        };
        Ok((
            i,
            Field {
                name: name.to_string(),
                name_span,
                colon,
                value,
            },
        ))
    }

    /// `{ fields }` or `< fields >`, `i` at the opening character.
    fn message<'a>(
        &self,
        i: &'a str,
        name: &str,
        name_span: Span,
        depth: usize,
    ) -> PResult<'a, Value> {
        let span = self.span_of(i);
        if depth >= MAX_DEPTH {
            return fail(i, format!("blocks nested too deeply (limit {MAX_DEPTH})"));
        }
        let close = if i.starts_with('<') { '>' } else { '}' };
        let closer = Closer {
            close,
            name,
            opened: name_span,
        };
        let (i, fields) = self.fields(&i[1..], Some(&closer), depth + 1)?;
        Ok((i, Value::Message(fields, span)))
    }

    /// `[ v, v, ... ]`, `i` at the `[`.
    fn list<'a>(
        &self,
        i: &'a str,
        name: &str,
        name_span: Span,
        depth: usize,
    ) -> PResult<'a, Value> {
        let span = self.span_of(i);
        if depth >= MAX_DEPTH {
            return fail(i, format!("blocks nested too deeply (limit {MAX_DEPTH})"));
        }
        let mut items = Vec::new();
        let mut i = ws(&i[1..]);
        if let Some(r) = i.strip_prefix(']') {
            return Ok((r, Value::List(items, span)));
        }
        loop {
            let (r, item) = match i.chars().next() {
                Some('{' | '<') => self.message(i, name, name_span, depth + 1)?,
                None => {
                    return fail(
                        i,
                        format!(
                            "expected \"]\" to close list \"{name}\" opened at {span}, got end of input"
                        ),
                    );
                }
                _ => match self.scalar(i) {
                    Ok(ok) => ok,
                    Err(nom::Err::Error(_)) => {
                        return unexpected(i, &format!("expected a value in list \"{name}\""));
                    }
                    Err(e) => return Err(e),
                },
            };
            items.push(item);
            i = ws(r);
            match i.chars().next() {
                Some(',') => i = ws(&i[1..]),
                Some(']') => return Ok((&i[1..], Value::List(items, span))),
                None => {
                    return fail(
                        i,
                        format!(
                            "expected \"]\" to close list \"{name}\" opened at {span}, got end of input"
                        ),
                    );
                }
                Some(_) => {
                    return unexpected(i, &format!("expected \",\" or \"]\" in list \"{name}\""));
                }
            }
        }
    }

    /// A scalar value: (signed) number or identifier, or one or more adjacent string literals.
    /// `Err::Error` when `i` does not start a value.
    fn scalar<'a>(&self, i: &'a str) -> PResult<'a, Value> {
        let span = self.span_of(i);
        match i.chars().next() {
            Some('"' | '\'') => {
                let mut bytes = Vec::new();
                let (mut r, ()) = string_literal(i, &mut bytes)?;
                loop {
                    let after = ws(r);
                    if after.starts_with(['"', '\'']) {
                        let (r2, ()) = string_literal(after, &mut bytes)?;
                        r = r2;
                    } else {
                        break;
                    }
                }
                Ok((r, Value::Scalar(Scalar::Str(bytes), span)))
            }
            Some('-') => {
                let after = ws(&i[1..]);
                if let Ok((r, id)) = ident(after) {
                    return Ok((r, Value::Scalar(Scalar::Ident(format!("-{id}")), span)));
                }
                match number(after) {
                    Ok((r, s)) => {
                        let s = match s {
                            Scalar::Int { raw, value } => Scalar::Int {
                                raw: format!("-{raw}"),
                                value: -value,
                            },
                            Scalar::Float { raw, value } => Scalar::Float {
                                raw: format!("-{raw}"),
                                value: -value,
                            },
                            other => other,
                        };
                        Ok((r, Value::Scalar(s, span)))
                    }
                    Err(nom::Err::Error(_)) => unexpected(after, "expected a number after \"-\""),
                    Err(e) => Err(e),
                }
            }
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let (r, s) = number(i)?;
                Ok((r, Value::Scalar(s, span)))
            }
            Some(c) if is_ident_start(c) => {
                let (r, id) = ident(i)?;
                Ok((r, Value::Scalar(Scalar::Ident(id.to_string()), span)))
            }
            _ => Err(nom::Err::Error(PErr {
                rest_len: i.len(),
                msg: String::new(),
            })),
        }
    }
}

/// Whether an identifier names an infinity or NaN (`inf`, `-Infinity`, `nan`, ...); returns the
/// value.
pub fn special_float(ident: &str) -> Option<f64> {
    let (neg, body) = match ident.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, ident),
    };
    let v = if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        f64::INFINITY
    } else if body.eq_ignore_ascii_case("nan") {
        f64::NAN
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(src: &str) -> Value {
        let mut fields = parse(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
        assert_eq!(fields.len(), 1, "{src:?}");
        fields.remove(0).value
    }

    fn scalar(src: &str) -> Scalar {
        match one(src) {
            Value::Scalar(s, _) => s,
            v => panic!("{src:?}: not a scalar: {v:?}"),
        }
    }

    fn int(src: &str) -> i128 {
        match scalar(src) {
            Scalar::Int { value, .. } => value,
            s => panic!("{src:?}: not an int: {s:?}"),
        }
    }

    fn float(src: &str) -> f64 {
        match scalar(src) {
            Scalar::Float { value, .. } => value,
            s => panic!("{src:?}: not a float: {s:?}"),
        }
    }

    fn string(src: &str) -> Vec<u8> {
        match scalar(src) {
            Scalar::Str(b) => b,
            s => panic!("{src:?}: not a string: {s:?}"),
        }
    }

    fn error(src: &str) -> TextError {
        match parse(src) {
            Ok(f) => panic!("{src:?} parsed: {f:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(
            string(r#"s: "a\nb\tc\rd\\e\'f\"g\?""#),
            b"a\nb\tc\rd\\e'f\"g?"
        );
        assert_eq!(string(r#"s: "\a\b\f\v""#), b"\x07\x08\x0c\x0b");
        assert_eq!(string(r#"s: "\x41\x4a\xf""#), b"AJ\x0f");
        assert_eq!(string(r#"s: "\101\0\12\1234""#), b"A\0\nS4");
        assert_eq!(string(r#"s: "\u00e9\U0001F600""#), "é😀".as_bytes());
        assert_eq!(string("s: 'it''s'"), b"its");
        assert_eq!(string("s: 'say \"hi\"'"), b"say \"hi\"");
        assert_eq!(string("s: \"héllo\""), "héllo".as_bytes());
        assert_eq!(string("s: \"\""), b"");
    }

    #[test]
    fn adjacent_strings_concatenate() {
        assert_eq!(string("s: \"a\" 'b'\n  # comment\n \"c\""), b"abc");
    }

    #[test]
    fn integers() {
        assert_eq!(int("n: 42"), 42);
        assert_eq!(int("n: -42"), -42);
        assert_eq!(int("n: 0"), 0);
        assert_eq!(int("n: 0x1F"), 31);
        assert_eq!(int("n: 0XfF"), 255);
        assert_eq!(int("n: -0x10"), -16);
        assert_eq!(int("n: 017"), 15);
        assert_eq!(int("n: 18446744073709551615"), u64::MAX as i128);
        assert_eq!(
            int("n: 999999999999999999999999999999999999999999"),
            i128::MAX
        );
        match scalar("n: -7") {
            Scalar::Int { raw, .. } => assert_eq!(raw, "-7"),
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn floats() {
        assert_eq!(float("x: 1."), 1.0);
        assert_eq!(float("x: .5"), 0.5);
        assert_eq!(float("x: 1e-3"), 1e-3);
        assert_eq!(float("x: 1.5E+2"), 150.0);
        assert_eq!(float("x: 1.f"), 1.0);
        assert_eq!(float("x: 2.5F"), 2.5);
        assert_eq!(float("x: 3f"), 3.0);
        assert_eq!(float("x: -0.25"), -0.25);
        assert_eq!(float("x: 0.5"), 0.5);
        assert_eq!(scalar("x: -inf"), Scalar::Ident("-inf".into()));
        assert_eq!(scalar("x: nan"), Scalar::Ident("nan".into()));
        assert_eq!(special_float("-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(special_float("INF"), Some(f64::INFINITY));
        assert!(special_float("NaN").is_some_and(f64::is_nan));
        assert_eq!(special_float("infinite"), None);
    }

    #[test]
    fn comments_and_separators() {
        let src = "# head\na: 1; b: 2, c { d: 3; } ;\n# tail without newline";
        let f = parse(src).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.len(), 3);
        assert_eq!(f[2].name, "c");
        let f = parse("a: 1 # trailing").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.len(), 1);
        assert!(parse("").is_ok_and(|f| f.is_empty()));
        assert!(parse("  # only a comment").is_ok_and(|f| f.is_empty()));
        assert!(parse("a: 1\r\n# windows\r\nb: 2\r\n").is_ok_and(|f| f.len() == 2));
        assert!(parse("\u{feff}a: 1\x0b\x0cb: 2").is_ok_and(|f| f.len() == 2));
    }

    #[test]
    fn blocks() {
        for src in ["m { a: 1 }", "m: { a: 1 }", "m < a: 1 >", "m: <a:1>"] {
            match one(src) {
                Value::Message(f, span) => {
                    assert_eq!(f.len(), 1, "{src}");
                    assert_eq!(span.line, 1);
                }
                v => panic!("{src}: {v:?}"),
            }
        }
        assert!(matches!(one("m {}"), Value::Message(f, _) if f.is_empty()));
    }

    #[test]
    fn lists() {
        match one("x: [1, 2.5, 'a', B, -3]") {
            Value::List(items, span) => {
                assert_eq!(items.len(), 5);
                assert_eq!(span, Span { line: 1, col: 4 });
                assert_eq!(items[4].span(), Span { line: 1, col: 21 });
            }
            v => panic!("{v:?}"),
        }
        assert!(matches!(one("x: []"), Value::List(i, _) if i.is_empty()));
        assert!(matches!(one("x [ {a: 1}, <b: 2> ]"), Value::List(i, _) if i.len() == 2));
        assert!(matches!(one("x: [ {a: 1} ]"), Value::List(i, _) if i.len() == 1));
        let f = parse("x: [1]").unwrap_or_default();
        assert!(f.first().is_some_and(|f| f.colon));
    }

    #[test]
    fn spans() {
        let src = "name: \"n\"\nlayer {\n  type: \"Conv\"\n  p { k: 3 }\n}\n";
        let f = parse(src).unwrap_or_default();
        assert_eq!(f[0].name_span, Span { line: 1, col: 1 });
        assert_eq!(f[0].value.span(), Span { line: 1, col: 7 });
        assert_eq!(f[1].name_span, Span { line: 2, col: 1 });
        assert_eq!(f[1].value.span(), Span { line: 2, col: 7 });
        let Value::Message(inner, _) = &f[1].value else {
            panic!()
        };
        assert_eq!(inner[0].name_span, Span { line: 3, col: 3 });
        assert_eq!(inner[1].value.span(), Span { line: 4, col: 5 });
        // Columns count characters.
        let f = parse("a: \"é\" b: 1").unwrap_or_default();
        assert_eq!(f[1].name_span, Span { line: 1, col: 8 });
    }

    #[test]
    fn errors() {
        let cases: &[(&str, (u32, u32), &str)] = &[
            (
                "a: 1\nlayer {\n  b: 2\n",
                (4, 1),
                "expected \"}\" to close \"layer\" opened at 2:1",
            ),
            (
                "m < a: 1 }",
                (1, 10),
                "expected \">\" to close \"m\" opened at 1:1",
            ),
            ("a: 1\n}", (2, 1), "unexpected \"}\" with no open block"),
            ("a: \"abc", (1, 4), "unterminated string"),
            ("a: \"ab\nc\"", (1, 4), "unterminated string"),
            ("a: \"x\\qy\"", (1, 6), "invalid escape sequence \"\\q\""),
            ("a: \"\\x\"", (1, 5), "invalid escape sequence \"\\x\""),
            ("a:\n}", (2, 1), "expected a value after \":\""),
            ("a:", (1, 3), "expected a value after \":\""),
            ("a: @", (1, 4), "unexpected character '@'"),
            ("@a: 1", (1, 1), "unexpected character '@'"),
            (
                "a 1",
                (1, 3),
                "expected \":\" or \"{\" after field name \"a\"",
            ),
            ("a: [1 2]", (1, 7), "expected \",\" or \"]\" in list \"a\""),
            ("a: [1,]", (1, 7), "expected a value in list \"a\""),
            (
                "a: [1, 2",
                (1, 9),
                "expected \"]\" to close list \"a\" opened at 1:4",
            ),
            (
                "a: 12abc",
                (1, 6),
                "need space between number and identifier",
            ),
            ("a: 09", (1, 4), "leading zero must be in octal"),
            ("a: 1e", (1, 5), "\"e\" must be followed by an exponent"),
            ("a: 0x", (1, 4), "\"0x\" must be followed by hex digits"),
            ("a: -", (1, 5), "expected a number after \"-\""),
            ("[ext.field]: 1", (1, 1), "extension and Any field names"),
            ("a: 1 : 2", (1, 6), "expected a field name"),
        ];
        for (src, (line, col), msg) in cases {
            let e = error(src);
            assert!(
                e.line == *line && e.col == *col && e.message.contains(msg),
                "{src:?}: got {e}, want {line}:{col}: {msg}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = "a {".repeat(10_000);
        let e = error(&src);
        assert!(e.message.contains("nested too deeply"), "{e}");
        let src = format!("a: {}", "[".repeat(10_000));
        let _ = parse(&src);
    }

    #[test]
    fn display() {
        let e = error("a: @");
        assert_eq!(e.to_string(), "1:4: unexpected character '@'");
    }
}

#[cfg(test)]
mod line_index_tests {
    use super::*;

    #[test]
    fn spans_in_any_order() {
        let src = "ab\ncd\n\néf\ng";
        let idx = LineIndex::new(src);
        let want = |line, col| Span { line, col };
        let cases = [
            (0, want(1, 1)),
            (2, want(1, 3)),
            (3, want(2, 1)),
            (6, want(3, 1)),
            (7, want(4, 1)),
            (9, want(4, 2)),
            (13, want(5, 2)),
            (100, want(5, 2)),
        ];
        for (off, span) in cases {
            assert_eq!(idx.span(off), span, "offset {off}");
        }
        for (off, span) in cases.iter().rev() {
            assert_eq!(idx.span(*off), *span, "offset {off} (backwards)");
        }
    }
}
