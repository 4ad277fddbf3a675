//! Funcional (seed 001, "Autenticação"): a GraphQL endpoint whose only mutation is
//! `createToken(login: String!, password: String!): Token!` with `Token { token: String! }`.
//! The token is a JWT whose `exp` claim is the only expiry there is.
//!
//! Requests are GraphQL over HTTP: `POST` with a JSON `query`, optional `variables` and
//! `operationName`. Status codes and error codes follow Apollo Server, which the
//! document's error (`extensions.code`, `originalError.statusCode` from NestJS) points to:
//! a document that can't be parsed, validated or given its variables is a 400 with an
//! `errors` array and no `data`, and wrong credentials are an error *inside* a 200
//! response, `UNAUTHENTICATED`, with `"data": null`, because `createToken` is non-null.
//! Messages are graphql-js's wording.

use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{json, json_object, record_json};
use crate::emulator::graphql::{self, Document, Field, Operation, OperationKind, Type};
use crate::emulator::state::{Api, IssueSpec, TokenFormat};

/// One GraphQL error object; `at` is the 1-based line and column.
fn gql_error(message: &str, at: Option<(usize, usize)>, code: &str) -> Value {
    let mut error = json!({"message": message, "extensions": {"code": code}});
    if let Some((line, column)) = at {
        error["locations"] = json!([{"line": line, "column": column}]);
    }
    error
}

/// A request error: status 400, `errors`, no `data` (the request never executed).
fn request_errors(api: &Api, errors: Vec<Value>) -> Response {
    api.reject(json(StatusCode::BAD_REQUEST, json!({"errors": errors})))
}

fn bad_request(api: &Api, message: &str) -> Response {
    request_errors(api, vec![gql_error(message, None, "BAD_REQUEST")])
}

/// `POST /funcional/graphql`.
pub(crate) async fn graphql(State(api): State<Api>, headers: HeaderMap, body: Bytes) -> Response {
    let object = match json_object(&headers, &body) {
        Ok(object) => object,
        Err(error) => return bad_request(&api, &error.message()),
    };
    record_json(&api, "/funcional/graphql", &headers, &object);
    let Some(query) = object
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty())
    else {
        return bad_request(
            &api,
            "GraphQL operations must contain a non-empty `query` or a `persistedQuery` extension.",
        );
    };
    let variables = match object.get("variables") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(variables)) => variables.clone(),
        Some(_) => {
            return bad_request(
                &api,
                "`variables` in a POST body should be provided as an object.",
            );
        }
    };
    let operation_name = match object.get("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.as_str()),
        Some(_) => {
            return bad_request(
                &api,
                "`operationName` in a POST body must be a string if provided.",
            );
        }
    };
    let document = match graphql::parse(query) {
        Ok(document) => document,
        Err(error) => {
            let at = Some((error.line, error.column));
            return request_errors(
                &api,
                vec![gql_error(&error.message, at, "GRAPHQL_PARSE_FAILED")],
            );
        }
    };
    let operation = match select_operation(&document, operation_name) {
        Ok(operation) => operation,
        Err(message) => {
            return request_errors(
                &api,
                vec![gql_error(&message, None, "OPERATION_RESOLUTION_FAILURE")],
            );
        }
    };
    let invalid = validate(operation);
    if !invalid.is_empty() {
        let errors = invalid
            .into_iter()
            .map(|(message, at)| gql_error(&message, at, "GRAPHQL_VALIDATION_FAILED"))
            .collect();
        return request_errors(&api, errors);
    }
    let values = match coerce_variables(operation, &variables) {
        Ok(values) => values,
        Err(errors) => {
            let errors = errors
                .iter()
                .map(|message| gql_error(message, None, "BAD_USER_INPUT"))
                .collect();
            return request_errors(&api, errors);
        }
    };
    execute(&api, operation, &values)
}

/// The operation to run (GraphQL spec §6.1 GetOperation).
fn select_operation<'a>(
    document: &'a Document,
    name: Option<&str>,
) -> Result<&'a Operation, String> {
    match name {
        Some(name) => document
            .operations
            .iter()
            .find(|op| op.name.as_deref() == Some(name))
            .ok_or_else(|| format!("Unknown operation named \"{name}\".")),
        None if document.operations.len() == 1 => Ok(&document.operations[0]),
        None => Err("Must provide operation name if query contains multiple operations.".into()),
    }
}

/// The schema's scalar types; variables must be declared with one of them.
const SCALARS: [&str; 5] = ["String", "Int", "Float", "Boolean", "ID"];

fn named_type(ty: &Type) -> &str {
    match ty {
        Type::Named(name) => name,
        Type::List(inner) | Type::NonNull(inner) => named_type(inner),
    }
}

/// The validation rules that matter for this schema; messages as graphql-js words them.
fn validate(operation: &Operation) -> Vec<(String, Option<(usize, usize)>)> {
    let mut errors = Vec::new();
    let in_operation = match &operation.name {
        Some(name) => format!(" by operation \"{name}\""),
        None => String::new(),
    };
    for definition in &operation.variables {
        let named = named_type(&definition.ty);
        if !SCALARS.contains(&named) {
            errors.push((format!("Unknown type \"{named}\"."), None));
        }
    }
    let root = match operation.kind {
        OperationKind::Query => "Query",
        OperationKind::Mutation => "Mutation",
        OperationKind::Subscription => {
            errors.push((
                "Schema is not configured to execute subscription operation.".into(),
                None,
            ));
            return errors;
        }
    };
    let mut used = Vec::new();
    for field in &operation.selection {
        let at = Some((field.line, field.column));
        match field.name.as_str() {
            "__typename" => check_leaf(field, root, &mut errors),
            "createToken" if operation.kind == OperationKind::Mutation => {
                validate_create_token(operation, field, &in_operation, &mut used, &mut errors);
            }
            other => errors.push((
                format!("Cannot query field \"{other}\" on type \"{root}\"."),
                at,
            )),
        }
    }
    for definition in &operation.variables {
        if !used.contains(&definition.name.as_str()) {
            let message = match &operation.name {
                Some(name) => format!(
                    "Variable \"${}\" is never used in operation \"{name}\".",
                    definition.name
                ),
                None => format!("Variable \"${}\" is never used.", definition.name),
            };
            errors.push((message, None));
        }
    }
    errors
}

/// A scalar field: no arguments, no sub-selection.
fn check_leaf(field: &Field, parent: &str, errors: &mut Vec<(String, Option<(usize, usize)>)>) {
    let at = Some((field.line, field.column));
    for (argument, _) in &field.arguments {
        errors.push((
            format!(
                "Unknown argument \"{argument}\" on field \"{parent}.{}\".",
                field.name
            ),
            at,
        ));
    }
    if field.selection.is_some() {
        errors.push((
            format!(
                "Field \"{}\" must not have a selection since type \"String!\" has no subfields.",
                field.name
            ),
            at,
        ));
    }
}

fn validate_create_token<'a>(
    operation: &'a Operation,
    field: &'a Field,
    in_operation: &str,
    used: &mut Vec<&'a str>,
    errors: &mut Vec<(String, Option<(usize, usize)>)>,
) {
    let at = Some((field.line, field.column));
    for (argument, value) in &field.arguments {
        if argument != "login" && argument != "password" {
            errors.push((
                format!("Unknown argument \"{argument}\" on field \"Mutation.createToken\"."),
                at,
            ));
            continue;
        }
        match value {
            graphql::Value::String(_) => {}
            graphql::Value::Variable(name) => {
                used.push(name);
                match operation.variables.iter().find(|d| &d.name == name) {
                    None => errors.push((
                        format!("Variable \"${name}\" is not defined{in_operation}."),
                        at,
                    )),
                    Some(definition) => {
                        // "All Variable Usages Are Allowed": String! fits, and so does a
                        // nullable String with a non-null default.
                        let fits = match &definition.ty {
                            Type::NonNull(inner) => **inner == Type::Named("String".into()),
                            Type::Named(named) => {
                                named == "String"
                                    && definition
                                        .default
                                        .as_ref()
                                        .is_some_and(|d| *d != graphql::Value::Null)
                            }
                            Type::List(_) => false,
                        };
                        if !fits {
                            errors.push((
                                format!(
                                    "Variable \"${name}\" of type \"{}\" used in position \
                                     expecting type \"String!\".",
                                    definition.ty
                                ),
                                at,
                            ));
                        }
                    }
                }
            }
            graphql::Value::Null => {
                errors.push(("Expected value of type \"String!\", found null.".into(), at));
            }
            other => errors.push((
                format!("String cannot represent a non string value: {other}"),
                at,
            )),
        }
    }
    for required in ["login", "password"] {
        if !field.arguments.iter().any(|(name, _)| name == required) {
            errors.push((
                format!(
                    "Field \"createToken\" argument \"{required}\" of type \"String!\" is \
                     required, but it was not provided."
                ),
                at,
            ));
        }
    }
    let Some(selection) = &field.selection else {
        errors.push((
            "Field \"createToken\" of type \"Token!\" must have a selection of subfields. \
             Did you mean \"createToken { ... }\"?"
                .into(),
            at,
        ));
        return;
    };
    for sub in selection {
        match sub.name.as_str() {
            "token" | "__typename" => check_leaf(sub, "Token", errors),
            other => errors.push((
                format!("Cannot query field \"{other}\" on type \"Token\"."),
                Some((sub.line, sub.column)),
            )),
        }
    }
}

/// Variable values after coercion (§6.1.2). Validation has ensured that every variable is
/// a `String` used where `String!` is expected.
fn coerce_variables(
    operation: &Operation,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<String>> {
    let mut values = Map::new();
    let mut errors = Vec::new();
    for definition in &operation.variables {
        let name = &definition.name;
        let value = match (given.get(name), &definition.default) {
            (Some(value), _) => value.clone(),
            (None, Some(graphql::Value::String(default))) => Value::from(default.as_str()),
            (None, _) => Value::Null,
        };
        match (&value, &definition.ty) {
            (Value::String(_), _) => {
                values.insert(name.clone(), value);
            }
            (Value::Null, Type::NonNull(_)) if !given.contains_key(name) => errors.push(format!(
                "Variable \"${name}\" of required type \"{}\" was not provided.",
                definition.ty
            )),
            (Value::Null, _) => errors.push(format!(
                "Variable \"${name}\" of non-null type \"String!\" must not be null."
            )),
            (other, _) => errors.push(format!(
                "Variable \"${name}\" got invalid value {other}; \
                 String cannot represent a non string value: {other}"
            )),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// Runs a validated operation with coerced variables.
fn execute(api: &Api, operation: &Operation, variables: &Map<String, Value>) -> Response {
    let root = if operation.kind == OperationKind::Mutation {
        "Mutation"
    } else {
        "Query"
    };
    let mut data = Map::new();
    let mut errors = Vec::new();
    for field in &operation.selection {
        let key = field.response_key().to_owned();
        if field.name == "__typename" {
            data.insert(key, Value::from(root));
            continue;
        }
        api.stats().logins.fetch_add(1, Ordering::Relaxed);
        let argument = |name: &str| -> String {
            let value = field
                .arguments
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v);
            match value {
                Some(graphql::Value::String(s)) => s.clone(),
                Some(graphql::Value::Variable(v)) => variables
                    .get(v)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                _ => String::new(),
            }
        };
        let (login, password) = (argument("login"), argument("password"));
        if !api.password_ok(&login, &password) {
            let mut error = gql_error(
                "Unauthorized",
                Some((field.line, field.column)),
                "UNAUTHENTICATED",
            );
            error["path"] = json!([key]);
            error["extensions"]["originalError"] =
                json!({"message": "Unauthorized", "statusCode": 401});
            errors.push(error);
            continue;
        }
        let issued = api.issue(IssueSpec {
            subject: &login,
            access: TokenFormat::Jwt,
            refresh: None,
            client_id: None,
            scope: None,
            family: None,
        });
        let mut token = Map::new();
        for sub in field.selection.iter().flatten() {
            let value = if sub.name == "token" {
                Value::from(issued.access_token.as_str())
            } else {
                Value::from("Token")
            };
            token.insert(sub.response_key().to_owned(), value);
        }
        data.insert(key, Value::Object(token));
    }
    if errors.is_empty() {
        json(StatusCode::OK, json!({"data": data}))
    } else {
        // createToken is non-null, so its error nulls the whole `data` (spec §6.4.4).
        api.reject(json(
            StatusCode::OK,
            json!({"errors": errors, "data": null}),
        ))
    }
}
