//! Just enough of a GraphQL parser for Funcional's `createToken` mutation: executable
//! documents with operations, variable definitions, fields, aliases and arguments, and every
//! literal kind, following the lexical and syntax grammar of the GraphQL spec (October 2021,
//! §2 "Language"): commas and `#` comments are ignored, strings decode `\" \\ \/ \b \f \n \r
//! \t \uXXXX` (surrogate pairs joined; `\u{…}` accepted as in the current draft), and block
//! strings get their common indentation removed.
//!
//! Fragments and directives are refused with a syntax error naming them: tokend never
//! sends them, and a half-supported feature would emulate nothing.

use std::fmt;

/// A syntax error: graphql-js's message style plus the 1-based position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) message: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

/// A parsed executable document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Document {
    pub(crate) operations: Vec<Operation>,
}

/// `query`, `mutation` or `subscription`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OperationKind {
    Query,
    Mutation,
    Subscription,
}

/// One operation definition.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Operation {
    pub(crate) kind: OperationKind,
    pub(crate) name: Option<String>,
    pub(crate) variables: Vec<VariableDefinition>,
    pub(crate) selection: Vec<Field>,
}

/// `$name: Type = default`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VariableDefinition {
    pub(crate) name: String,
    pub(crate) ty: Type,
    pub(crate) default: Option<Value>,
}

/// A type reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Type {
    Named(String),
    List(Box<Type>),
    NonNull(Box<Type>),
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Named(name) => f.write_str(name),
            Type::List(inner) => write!(f, "[{inner}]"),
            Type::NonNull(inner) => write!(f, "{inner}!"),
        }
    }
}

/// A field selection with its position, for error locations.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub(crate) alias: Option<String>,
    pub(crate) name: String,
    pub(crate) arguments: Vec<(String, Value)>,
    pub(crate) selection: Option<Vec<Field>>,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Field {
    /// The key of this field in the response: its alias, else its name.
    pub(crate) fn response_key(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.name)
    }
}

/// An input value as written.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Variable(String),
    Int(String),
    Float(String),
    String(String),
    Boolean(bool),
    Null,
    Enum(String),
    List(Vec<Value>),
    Object(Vec<(String, Value)>),
}

impl fmt::Display for Value {
    /// GraphQL source form, as graphql-js prints values in error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Variable(name) => write!(f, "${name}"),
            Value::Int(text) | Value::Float(text) | Value::Enum(text) => f.write_str(text),
            Value::String(text) => write!(f, "{}", serde_json::Value::from(text.as_str())),
            Value::Boolean(b) => write!(f, "{b}"),
            Value::Null => f.write_str("null"),
            Value::List(items) => {
                let items: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Value::Object(fields) => {
                let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                write!(f, "{{{}}}", fields.join(", "))
            }
        }
    }
}

/// Parses an executable document.
pub(crate) fn parse(source: &str) -> Result<Document, SyntaxError> {
    let tokens = lex(source)?;
    let mut parser = Parser { tokens, pos: 0 };
    let mut operations = Vec::new();
    loop {
        operations.push(parser.definition()?);
        if parser.peek().kind == Kind::Eof {
            return Ok(Document { operations });
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// One of `! $ & ( ) : = @ [ ] { | }`.
    Punct(char),
    Spread,
    Name(String),
    Int(String),
    Float(String),
    Str(String),
    Eof,
}

impl fmt::Display for Kind {
    /// How graphql-js names a token in "Expected X, found Y.".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Punct(c) => write!(f, "\"{c}\""),
            Kind::Spread => f.write_str("\"...\""),
            Kind::Name(name) => write!(f, "Name \"{name}\""),
            Kind::Int(text) => write!(f, "Int \"{text}\""),
            Kind::Float(text) => write!(f, "Float \"{text}\""),
            Kind::Str(text) => write!(f, "String {}", serde_json::Value::from(text.as_str())),
            Kind::Eof => f.write_str("<EOF>"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    line: usize,
    column: usize,
}

/// A cursor over the source that tracks line and column (1-based, in characters).
struct Cursor<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
}

impl Cursor<'_> {
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' || (c == '\r' && self.peek() != Some('\n')) {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn error(&self, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            message: format!("Syntax Error: {}", message.into()),
            line: self.line,
            column: self.column,
        }
    }

    fn eat(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.bump();
            true
        } else {
            false
        }
    }
}

fn is_name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn is_name_continue(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

fn lex(source: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut cur = Cursor {
        chars: source.chars().peekable(),
        line: 1,
        column: 1,
    };
    let mut tokens = Vec::new();
    loop {
        // Ignored tokens (§2.1.7): BOM, whitespace, line terminators, commas, comments.
        while let Some(c) = cur.peek() {
            match c {
                '\u{feff}' | ' ' | '\t' | '\n' | '\r' | ',' => {
                    cur.bump();
                }
                '#' => {
                    while cur.peek().is_some_and(|c| c != '\n' && c != '\r') {
                        cur.bump();
                    }
                }
                _ => break,
            }
        }
        let (line, column) = (cur.line, cur.column);
        let Some(c) = cur.peek() else {
            tokens.push(Token {
                kind: Kind::Eof,
                line,
                column,
            });
            return Ok(tokens);
        };
        let kind = match c {
            '!' | '$' | '&' | '(' | ')' | ':' | '=' | '@' | '[' | ']' | '{' | '|' | '}' => {
                cur.bump();
                Kind::Punct(c)
            }
            '.' => {
                if cur.bump() == Some('.') && cur.eat('.') && cur.eat('.') {
                    Kind::Spread
                } else {
                    return Err(cur.error("Unexpected \".\"."));
                }
            }
            '"' => lex_string(&mut cur)?,
            '-' | '0'..='9' => lex_number(&mut cur)?,
            c if is_name_start(c) => {
                let mut name = String::new();
                while let Some(c) = cur.peek().filter(|&c| is_name_continue(c)) {
                    name.push(c);
                    cur.bump();
                }
                Kind::Name(name)
            }
            c => return Err(cur.error(format!("Unexpected character: {c:?}."))),
        };
        tokens.push(Token { kind, line, column });
    }
}

/// One or more decimal digits.
fn lex_digits(cur: &mut Cursor<'_>, text: &mut String) -> Result<(), SyntaxError> {
    if !cur.peek().is_some_and(|c| c.is_ascii_digit()) {
        return Err(cur.error("Invalid number, expected digit."));
    }
    while let Some(c) = cur.peek().filter(char::is_ascii_digit) {
        text.push(c);
        cur.bump();
    }
    Ok(())
}

fn lex_number(cur: &mut Cursor<'_>) -> Result<Kind, SyntaxError> {
    let mut text = String::new();
    if cur.eat('-') {
        text.push('-');
    }
    if cur.peek() == Some('0') {
        text.push('0');
        cur.bump();
        if cur.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(cur.error("Invalid number, unexpected digit after 0."));
        }
    } else {
        lex_digits(cur, &mut text)?;
    }
    let mut float = false;
    if cur.eat('.') {
        float = true;
        text.push('.');
        lex_digits(cur, &mut text)?;
    }
    if let Some(e) = cur.peek().filter(|&c| c == 'e' || c == 'E') {
        float = true;
        text.push(e);
        cur.bump();
        if let Some(sign) = cur.peek().filter(|&c| c == '+' || c == '-') {
            text.push(sign);
            cur.bump();
        }
        lex_digits(cur, &mut text)?;
    }
    if cur.peek().is_some_and(|c| c == '.' || is_name_start(c)) {
        return Err(cur.error("Invalid number, expected digit."));
    }
    Ok(if float {
        Kind::Float(text)
    } else {
        Kind::Int(text)
    })
}

fn lex_string(cur: &mut Cursor<'_>) -> Result<Kind, SyntaxError> {
    cur.bump(); // the opening quote
    if cur.eat('"') {
        if cur.eat('"') {
            return lex_block_string(cur);
        }
        return Ok(Kind::Str(String::new()));
    }
    let mut value = String::new();
    loop {
        match cur.bump() {
            None | Some('\n' | '\r') => return Err(cur.error("Unterminated string.")),
            Some('"') => return Ok(Kind::Str(value)),
            Some('\\') => {
                let escaped = match cur.bump() {
                    Some('"') => '"',
                    Some('\\') => '\\',
                    Some('/') => '/',
                    Some('b') => '\u{8}',
                    Some('f') => '\u{c}',
                    Some('n') => '\n',
                    Some('r') => '\r',
                    Some('t') => '\t',
                    Some('u') => lex_unicode_escape(cur)?,
                    Some(other) => {
                        return Err(
                            cur.error(format!("Invalid character escape sequence: \"\\{other}\"."))
                        );
                    }
                    None => return Err(cur.error("Unterminated string.")),
                };
                value.push(escaped);
            }
            Some(c) => value.push(c),
        }
    }
}

/// After `\u`: four hex digits (joining a surrogate pair) or `{hex}`.
fn lex_unicode_escape(cur: &mut Cursor<'_>) -> Result<char, SyntaxError> {
    let invalid = |cur: &Cursor<'_>| cur.error("Invalid Unicode escape sequence.");
    let hex = |cur: &mut Cursor<'_>, n: usize| -> Option<u32> {
        let mut code = 0u32;
        for _ in 0..n {
            code = code * 16 + cur.peek()?.to_digit(16)?;
            cur.bump();
        }
        Some(code)
    };
    if cur.eat('{') {
        let mut code = 0u32;
        let mut count = 0;
        while let Some(d) = cur.peek().and_then(|c| c.to_digit(16)) {
            code = code.checked_mul(16).ok_or_else(|| invalid(cur))? + d;
            count += 1;
            cur.bump();
        }
        if count == 0 || !cur.eat('}') {
            return Err(invalid(cur));
        }
        return char::from_u32(code).ok_or_else(|| invalid(cur));
    }
    let high = hex(cur, 4).ok_or_else(|| invalid(cur))?;
    if (0xD800..0xDC00).contains(&high) {
        // A leading surrogate must be followed by `\u` and a trailing one.
        if !(cur.eat('\\') && cur.eat('u')) {
            return Err(invalid(cur));
        }
        let low = hex(cur, 4).ok_or_else(|| invalid(cur))?;
        if !(0xDC00..0xE000).contains(&low) {
            return Err(invalid(cur));
        }
        let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
        return char::from_u32(code).ok_or_else(|| invalid(cur));
    }
    char::from_u32(high).ok_or_else(|| invalid(cur))
}

/// After the opening `"""`: raw text up to `"""`, where only `\"""` is an escape.
fn lex_block_string(cur: &mut Cursor<'_>) -> Result<Kind, SyntaxError> {
    let mut raw = String::new();
    loop {
        match cur.bump() {
            None => return Err(cur.error("Unterminated string.")),
            Some('"') => {
                if cur.eat('"') {
                    if cur.eat('"') {
                        return Ok(Kind::Str(block_string_value(&raw)));
                    }
                    raw.push_str("\"\"");
                } else {
                    raw.push('"');
                }
            }
            Some('\\') => {
                let mut quotes = 0;
                while quotes < 3 && cur.eat('"') {
                    quotes += 1;
                }
                if quotes == 3 {
                    raw.push_str("\"\"\"");
                } else {
                    raw.push('\\');
                    raw.push_str(&"\"".repeat(quotes));
                }
            }
            Some(c) => raw.push(c),
        }
    }
}

/// BlockStringValue (§2.9.4): drop the common indentation of all lines but the first and
/// the leading and trailing blank lines.
fn block_string_value(raw: &str) -> String {
    let normalised = raw.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = normalised.split('\n').collect();
    let indent = |line: &str| line.len() - line.trim_start_matches([' ', '\t']).len();
    let common = lines
        .iter()
        .skip(1)
        .filter(|line| !line.trim_start_matches([' ', '\t']).is_empty())
        .map(|line| indent(line))
        .min();
    let mut lines: Vec<&str> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| match common {
            Some(common) if i > 0 => line.get(common..).unwrap_or(""),
            _ => line,
        })
        .collect();
    let blank = |line: &&str| line.trim_start_matches([' ', '\t']).is_empty();
    while lines.first().is_some_and(blank) {
        lines.remove(0);
    }
    while lines.last().is_some_and(blank) {
        lines.pop();
    }
    lines.join("\n")
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends with Eof, and `bump` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if token.kind != Kind::Eof {
            self.pos += 1;
        }
        token
    }

    fn error_at(token: &Token, message: String) -> SyntaxError {
        SyntaxError {
            message: format!("Syntax Error: {message}"),
            line: token.line,
            column: token.column,
        }
    }

    fn unexpected(&self, expected: &str) -> SyntaxError {
        let token = self.peek();
        let message = match &token.kind {
            Kind::Spread => "fragments are not supported by the emulator.".to_owned(),
            Kind::Punct('@') => "directives are not supported by the emulator.".to_owned(),
            found => format!("Expected {expected}, found {found}."),
        };
        Self::error_at(token, message)
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().kind == Kind::Punct(c)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let hit = self.is_punct(c);
        if hit {
            self.bump();
        }
        hit
    }

    fn expect_punct(&mut self, c: char) -> Result<(), SyntaxError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("\"{c}\"")))
        }
    }

    fn name(&mut self) -> Result<String, SyntaxError> {
        match &self.peek().kind {
            Kind::Name(name) => {
                let name = name.clone();
                self.bump();
                Ok(name)
            }
            _ => Err(self.unexpected("Name")),
        }
    }

    fn definition(&mut self) -> Result<Operation, SyntaxError> {
        if self.is_punct('{') {
            // The query shorthand: an anonymous query without variables.
            return Ok(Operation {
                kind: OperationKind::Query,
                name: None,
                variables: Vec::new(),
                selection: self.selection_set()?,
            });
        }
        let token = self.peek().clone();
        let kind = match &token.kind {
            Kind::Name(word) if word == "query" => OperationKind::Query,
            Kind::Name(word) if word == "mutation" => OperationKind::Mutation,
            Kind::Name(word) if word == "subscription" => OperationKind::Subscription,
            Kind::Name(word) if word == "fragment" => {
                return Err(Self::error_at(
                    &token,
                    "fragments are not supported by the emulator.".into(),
                ));
            }
            _ => return Err(self.unexpected("\"query\", \"mutation\" or \"{\"")),
        };
        self.bump();
        let name = match self.peek().kind {
            Kind::Name(_) => Some(self.name()?),
            _ => None,
        };
        let mut variables = Vec::new();
        if self.eat_punct('(') {
            loop {
                variables.push(self.variable_definition()?);
                if self.eat_punct(')') {
                    break;
                }
            }
        }
        Ok(Operation {
            kind,
            name,
            variables,
            selection: self.selection_set()?,
        })
    }

    fn variable_definition(&mut self) -> Result<VariableDefinition, SyntaxError> {
        self.expect_punct('$')?;
        let name = self.name()?;
        self.expect_punct(':')?;
        let ty = self.type_ref()?;
        let default = if self.eat_punct('=') {
            Some(self.value(true)?)
        } else {
            None
        };
        Ok(VariableDefinition { name, ty, default })
    }

    fn type_ref(&mut self) -> Result<Type, SyntaxError> {
        let ty = if self.eat_punct('[') {
            let inner = self.type_ref()?;
            self.expect_punct(']')?;
            Type::List(Box::new(inner))
        } else {
            Type::Named(self.name()?)
        };
        Ok(if self.eat_punct('!') {
            Type::NonNull(Box::new(ty))
        } else {
            ty
        })
    }

    fn selection_set(&mut self) -> Result<Vec<Field>, SyntaxError> {
        self.expect_punct('{')?;
        let mut fields = Vec::new();
        loop {
            fields.push(self.field()?);
            if self.eat_punct('}') {
                return Ok(fields);
            }
        }
    }

    fn field(&mut self) -> Result<Field, SyntaxError> {
        let (line, column) = (self.peek().line, self.peek().column);
        let first = self.name()?;
        let (alias, name) = if self.eat_punct(':') {
            (Some(first), self.name()?)
        } else {
            (None, first)
        };
        let mut arguments = Vec::new();
        if self.eat_punct('(') {
            loop {
                let arg = self.name()?;
                self.expect_punct(':')?;
                arguments.push((arg, self.value(false)?));
                if self.eat_punct(')') {
                    break;
                }
            }
        }
        let selection = if self.is_punct('{') {
            Some(self.selection_set()?)
        } else {
            None
        };
        Ok(Field {
            alias,
            name,
            arguments,
            selection,
            line,
            column,
        })
    }

    /// A value; `constant` forbids variables (default values).
    fn value(&mut self, constant: bool) -> Result<Value, SyntaxError> {
        let token = self.peek().clone();
        let value = match token.kind {
            Kind::Punct('$') if !constant => {
                self.bump();
                return Ok(Value::Variable(self.name()?));
            }
            Kind::Punct('[') => {
                self.bump();
                let mut items = Vec::new();
                while !self.eat_punct(']') {
                    items.push(self.value(constant)?);
                }
                return Ok(Value::List(items));
            }
            Kind::Punct('{') => {
                self.bump();
                let mut fields = Vec::new();
                while !self.eat_punct('}') {
                    let name = self.name()?;
                    self.expect_punct(':')?;
                    fields.push((name, self.value(constant)?));
                }
                return Ok(Value::Object(fields));
            }
            Kind::Int(text) => Value::Int(text),
            Kind::Float(text) => Value::Float(text),
            Kind::Str(text) => Value::String(text),
            Kind::Name(name) => match name.as_str() {
                "true" => Value::Boolean(true),
                "false" => Value::Boolean(false),
                "null" => Value::Null,
                _ => Value::Enum(name),
            },
            _ => return Err(self.unexpected("a value")),
        };
        self.bump();
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_field(source: &str) -> Field {
        let doc = parse(source).unwrap();
        assert_eq!(doc.operations.len(), 1);
        doc.operations[0].selection[0].clone()
    }

    #[test]
    fn parses_the_documented_mutation_with_inline_literals() {
        let field = only_field(
            "mutation {\n  createToken(\n    login: \"usuario_exemplo\"\n    password: \"senha_exemplo\"\n  ) {\n    token\n  }\n}",
        );
        assert_eq!(field.name, "createToken");
        assert_eq!(
            field.arguments,
            vec![
                ("login".into(), Value::String("usuario_exemplo".into())),
                ("password".into(), Value::String("senha_exemplo".into())),
            ]
        );
        assert_eq!(field.selection.unwrap()[0].name, "token");
    }

    #[test]
    fn decodes_string_escapes_and_surrogate_pairs() {
        let field = only_field(
            r#"mutation { t: createToken(login: "a\"b\\c\/\n\u00e9\uD83D\uDE00\u{1F600}", password: "x") { token } }"#,
        );
        assert_eq!(field.alias.as_deref(), Some("t"));
        assert_eq!(
            field.arguments[0].1,
            Value::String("a\"b\\c/\né\u{1F600}\u{1F600}".into())
        );
    }

    #[test]
    fn block_strings_lose_common_indentation() {
        let field = only_field("{ f(a: \"\"\"\n    hello\n      world\n    \\\"\"\"\n  \"\"\") }");
        assert_eq!(
            field.arguments[0].1,
            Value::String("hello\n  world\n\"\"\"".into())
        );
    }

    #[test]
    fn parses_variables_defaults_comments_and_commas() {
        let doc = parse(
            "# login\nmutation Login($login: String!, $password: String = \"p\", $n: [Int!]) {\n createToken(login: $login, password: $password) { token, __typename } }",
        )
        .unwrap();
        let op = &doc.operations[0];
        assert_eq!(op.kind, OperationKind::Mutation);
        assert_eq!(op.name.as_deref(), Some("Login"));
        assert_eq!(op.variables[0].ty.to_string(), "String!");
        assert_eq!(op.variables[1].default, Some(Value::String("p".into())));
        assert_eq!(op.variables[2].ty.to_string(), "[Int!]");
        assert_eq!(
            op.selection[0].arguments[0].1,
            Value::Variable("login".into())
        );
    }

    #[test]
    fn reports_syntax_errors_with_position() {
        let err = parse("mutation {\n  createToken(login: ) }").unwrap_err();
        assert_eq!(err.message, "Syntax Error: Expected a value, found \")\".");
        assert_eq!((err.line, err.column), (2, 22));
        assert!(parse("{ f(a: \"open) }").is_err());
        assert!(parse("{ f(a: \"\\q\") }").is_err());
        assert!(parse("{ f(a: \"\\uD83D\") }").is_err());
        assert!(parse("{ f(a: 01) }").is_err());
        assert!(parse("{ ...F }").unwrap_err().message.contains("fragments"));
        assert!(
            parse("{ f @skip(if: true) }")
                .unwrap_err()
                .message
                .contains("directives")
        );
        assert!(parse("").is_err());
    }
}
