//! Reading a request body as the public API does, before validation: what is not a
//! JSON object of the call's shape is refused naming the field that is wrong.

use serde::de::DeserializeOwned;

/// Why a request body was refused before validation: not JSON, or JSON of the wrong
/// shape for the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyError {
    /// Where in the body it went wrong (`instances`, `action.run.args[0]`); `None` when
    /// the body as a whole is wrong (not JSON, not an object, trailing bytes).
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BodyError {}

/// Parse a request body as the public API does: empty (or all whitespace) or `null`
/// gives the type's default, which validation then refuses field by field, as the
/// receptor did; anything but a JSON object is refused, and an object of the wrong
/// shape is refused naming the field that is wrong.
pub fn parse_request<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, BodyError> {
    const WHY: &str = "request body is not valid JSON for this call";
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // serde reads a struct from an array too (`["t-1", "apps", …]` as a task): the
    // receptor took objects only, and an array's errors name no field.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(BodyError {
            field: None,
            message: format!("{WHY}: the body must be a JSON object, not an array"),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Option<T> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let known =
            |s: &serde_path_to_error::Segment| !matches!(s, serde_path_to_error::Segment::Unknown);
        let path = e.path().to_string();
        let field = (e.path().iter().any(known) && !path.is_empty()).then_some(path);
        let inner = e.into_inner();
        let message = match &field {
            Some(f) => format!("{WHY}: invalid field {f}: {inner}"),
            None => format!("{WHY}: {inner}"),
        };
        BodyError { field, message }
    })?;
    de.end().map_err(|e| BodyError {
        field: None,
        message: format!("{WHY}: {e}"),
    })?;
    Ok(parsed.unwrap_or_default())
}
