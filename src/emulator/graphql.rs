//! GraphQL documents for the Funcional emulator's `createToken` mutation, parsed by
//! `apollo-parser` (a maintained, spec-compliant parser with few dependencies: rowan,
//! memchr, thiserror) and turned into the small tree the emulator executes: operations,
//! variable definitions, fields, aliases, arguments and every literal kind. String escapes
//! (`\uXXXX` with surrogate pairs, `\u{…}`) and block strings are decoded by the parser.
//!
//! Only errors are shaped here: a syntax error reads like graphql-js's (`Syntax Error:
//! Expected Name, found ")".`) with its 1-based line and column, as Apollo Server answers.
//! Fragments and directives are refused with a syntax error naming them: tokend never
//! sends them, and a half-supported feature would emulate nothing.

use std::fmt;

use apollo_parser::SyntaxKind;
use apollo_parser::cst::{self, CstNode};

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

/// Nesting depth at which parsing stops with an error: far beyond any real login
/// document, and low enough that no document can exhaust the stack.
const RECURSION_LIMIT: usize = 64;

/// Parses an executable document.
pub(crate) fn parse(source: &str) -> Result<Document, SyntaxError> {
    let tree = apollo_parser::Parser::new(source)
        .recursion_limit(RECURSION_LIMIT)
        .parse();
    if let Some(error) = tree.errors().next() {
        return Err(syntax_error(source, error));
    }
    let mut operations = Vec::new();
    for definition in tree.document().definitions() {
        match definition {
            cst::Definition::OperationDefinition(op) => operations.push(operation(source, &op)?),
            cst::Definition::FragmentDefinition(f) => {
                return Err(unsupported(source, &f, "fragments"));
            }
            other => {
                let word = other.syntax().first_token().map(|t| t.text().to_owned());
                return Err(at(
                    source,
                    &other,
                    format!("Unexpected Name \"{}\".", word.unwrap_or_default()),
                ));
            }
        }
    }
    if operations.is_empty() {
        return Err(error_at(source, source.len(), "Unexpected <EOF>.".into()));
    }
    Ok(Document { operations })
}

/// A syntax error at byte `offset` of `source`.
fn error_at(source: &str, offset: usize, message: String) -> SyntaxError {
    let (line, column) = position(source, offset);
    SyntaxError {
        message: format!("Syntax Error: {message}"),
        line,
        column,
    }
}

/// A syntax error at the start of `node`.
fn at(source: &str, node: &impl CstNode, message: String) -> SyntaxError {
    error_at(source, node_offset(node), message)
}

/// The refusal of a feature the emulator does not implement.
fn unsupported(source: &str, node: &impl CstNode, what: &str) -> SyntaxError {
    at(
        source,
        node,
        format!("{what} are not supported by the emulator."),
    )
}

/// Where `node` starts: its first token that is not whitespace or a comment.
fn node_offset(node: &impl CstNode) -> usize {
    node.syntax()
        .descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .find(|t| {
            !matches!(
                t.kind(),
                SyntaxKind::WHITESPACE | SyntaxKind::COMMENT | SyntaxKind::COMMA
            )
        })
        .map_or_else(
            || node.syntax().text_range().start(),
            |t| t.text_range().start(),
        )
        .into()
}

/// The 1-based line and column (in characters) of byte `offset`; `\n`, `\r\n` and a lone
/// `\r` end a line, as in the GraphQL spec.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let (mut line, mut column) = (1, 1);
    let mut chars = source.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if i >= offset {
            break;
        }
        if c == '\n' || (c == '\r' && chars.peek().map(|&(_, n)| n) != Some('\n')) {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// apollo-parser's first error in graphql-js's words: `Expected X, found Y.` for a
/// missing piece, the lexer's own message (capitalised) for a bad token.
fn syntax_error(source: &str, error: &apollo_parser::Error) -> SyntaxError {
    let found = describe(error.data(), error.is_eof());
    let message = match error.message().strip_prefix("expected ") {
        Some(rest) => {
            let wanted = rest.split(", got").next().unwrap_or(rest);
            format!("Expected {}, found {found}.", expected(wanted))
        }
        None => {
            let mut chars = error.message().chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase());
            format!(
                "{}{}.",
                first.map(String::from).unwrap_or_default(),
                chars.as_str().trim_end_matches('.')
            )
        }
    };
    error_at(source, error.index(), message)
}

/// graphql-js's name for what the parser wanted.
fn expected(apollo: &str) -> String {
    let punct = match apollo {
        "L_PAREN" => "(",
        "R_PAREN" => ")",
        "L_CURLY" => "{",
        "R_CURLY" => "}",
        "L_BRACK" => "[",
        "R_BRACK" => "]",
        "COLON" => ":",
        "EQ" => "=",
        "DOLLAR" => "$",
        "BANG" => "!",
        "a valid Value" => return "a value".into(),
        "a Name" | "a name" | "Name" | "a Name Type" => return "Name".into(),
        "a Selection Set" => "{",
        "at least one Selection in Selection Set" => return "Name".into(),
        other => return other.to_owned(),
    };
    format!("\"{punct}\"")
}

/// graphql-js's description of a token: `"("`, `Name "x"`, `Int "01"`, `<EOF>`.
fn describe(data: &str, eof: bool) -> String {
    let Some(first) = data.chars().next().filter(|_| !eof) else {
        return "<EOF>".into();
    };
    let kind = if first.is_ascii_alphabetic() || first == '_' {
        "Name "
    } else if first.is_ascii_digit() || first == '-' {
        if data.contains(['.', 'e', 'E']) {
            "Float "
        } else {
            "Int "
        }
    } else if first == '"' {
        if data.starts_with("\"\"\"") {
            "BlockString "
        } else {
            "String "
        }
    } else {
        ""
    };
    format!("{kind}{}", serde_json::Value::from(data))
}

fn operation(source: &str, op: &cst::OperationDefinition) -> Result<Operation, SyntaxError> {
    if let Some(d) = op.directives() {
        return Err(unsupported(source, &d, "directives"));
    }
    // No operation type is the query shorthand: `{ … }`.
    let kind = match op.operation_type() {
        Some(t) if t.mutation_token().is_some() => OperationKind::Mutation,
        Some(t) if t.subscription_token().is_some() => OperationKind::Subscription,
        _ => OperationKind::Query,
    };
    let mut variables = Vec::new();
    for def in op
        .variable_definitions()
        .iter()
        .flat_map(|v| v.variable_definitions())
    {
        if let Some(d) = def.directives() {
            return Err(unsupported(source, &d, "directives"));
        }
        variables.push(VariableDefinition {
            name: def
                .variable()
                .and_then(|v| v.name())
                .map(name)
                .unwrap_or_default(),
            ty: def
                .ty()
                .map_or(Type::Named(String::new()), |t| type_ref(&t)),
            default: def
                .default_value()
                .and_then(|d| d.value())
                .map(|v| value(&v)),
        });
    }
    Ok(Operation {
        kind,
        name: op.name().map(name),
        variables,
        selection: selection_set(source, op.selection_set())?,
    })
}

fn name(name: cst::Name) -> String {
    name.text().as_str().to_owned()
}

fn type_ref(ty: &cst::Type) -> Type {
    match ty {
        cst::Type::NamedType(t) => Type::Named(t.name().map(name).unwrap_or_default()),
        cst::Type::ListType(t) => Type::List(Box::new(
            t.ty().map_or(Type::Named(String::new()), |t| type_ref(&t)),
        )),
        cst::Type::NonNullType(t) => {
            let inner = match (t.named_type(), t.list_type()) {
                (Some(n), _) => type_ref(&cst::Type::NamedType(n)),
                (None, Some(l)) => type_ref(&cst::Type::ListType(l)),
                (None, None) => Type::Named(String::new()),
            };
            Type::NonNull(Box::new(inner))
        }
    }
}

fn selection_set(source: &str, set: Option<cst::SelectionSet>) -> Result<Vec<Field>, SyntaxError> {
    let mut fields = Vec::new();
    for selection in set.iter().flat_map(|s| s.selections()) {
        let field = match selection {
            cst::Selection::Field(field) => field,
            cst::Selection::FragmentSpread(f) => return Err(unsupported(source, &f, "fragments")),
            cst::Selection::InlineFragment(f) => return Err(unsupported(source, &f, "fragments")),
        };
        if let Some(d) = field.directives() {
            return Err(unsupported(source, &d, "directives"));
        }
        let mut arguments = Vec::new();
        for arg in field.arguments().iter().flat_map(|a| a.arguments()) {
            let value = match arg.value() {
                Some(v) => value(&v),
                None => Value::Null,
            };
            arguments.push((arg.name().map(name).unwrap_or_default(), value));
        }
        let (line, column) = position(source, node_offset(&field));
        fields.push(Field {
            alias: field.alias().and_then(|a| a.name()).map(name),
            name: field.name().map(name).unwrap_or_default(),
            arguments,
            selection: match field.selection_set() {
                Some(set) => Some(selection_set(source, Some(set))?),
                None => None,
            },
            line,
            column,
        });
    }
    Ok(fields)
}

/// A value as written. The parser reported no error, so every token is well-formed (and
/// apollo-parser's string decoding, which assumes that, cannot panic).
fn value(v: &cst::Value) -> Value {
    let text = |token: Option<apollo_parser::SyntaxToken>| {
        token.map(|t| t.text().to_owned()).unwrap_or_default()
    };
    match v {
        cst::Value::Variable(var) => Value::Variable(var.name().map(name).unwrap_or_default()),
        cst::Value::StringValue(s) => Value::String(String::from(s)),
        cst::Value::FloatValue(f) => Value::Float(text(f.float_token())),
        cst::Value::IntValue(i) => Value::Int(text(i.int_token())),
        cst::Value::BooleanValue(b) => Value::Boolean(b.true_token().is_some()),
        cst::Value::NullValue(_) => Value::Null,
        cst::Value::EnumValue(e) => Value::Enum(e.name().map(name).unwrap_or_default()),
        cst::Value::ListValue(list) => {
            Value::List(list.values().map(|item| value(&item)).collect())
        }
        cst::Value::ObjectValue(object) => Value::Object(
            object
                .object_fields()
                .map(|f| {
                    let v = f.value().map_or(Value::Null, |v| value(&v));
                    (f.name().map(name).unwrap_or_default(), v)
                })
                .collect(),
        ),
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

    /// Input from the network: bad escapes, code points past U+10FFFF and deep nesting are
    /// syntax errors, never a panic or a stack overflow.
    #[test]
    fn hostile_documents_are_syntax_errors() {
        let deep = format!(
            "{{ f(a: {}1{}) }}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let cases = [
            ("{ f(a: \"\\u{110000}\") }", "Unicode scalar value"),
            (
                "{ f(a: \"\\u{FFFFFFFFFFFFFFFFFFFF}\") }",
                "Unicode scalar value",
            ),
            ("{ f(a: \"\\uDE00\") }", "surrogate"),
            (deep.as_str(), "recursion limit"),
            ("{{{{", "Expected Name, found \"{\"."),
            ("type Q { a: Int }", "Unexpected Name \"type\"."),
            ("query ($a: Int = $b) { a }", "Const"),
        ];
        for (source, want) in cases {
            let err = parse(source).unwrap_err();
            assert!(err.message.starts_with("Syntax Error: "), "{err:?}");
            assert!(err.message.contains(want), "{source:.40}: {err:?}");
        }
    }
}
