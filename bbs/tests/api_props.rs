//! The public API's request parsing and validation, fuzzed over real HTTP (issue 27):
//! generated bodies for `POST /v1/tasks`, `POST /v1/desired_lrps` and
//! `PUT /v1/desired_lrps/GUID` (valid requests broken in every way
//! `specs/tests/bodies` knows: huge, negative and fractional numbers, deep and wide
//! action trees, long strings, odd unicode, NUL, missing, extra and mistyped fields,
//! bytes that are not JSON) sent as bytes to a BBS served on loopback. For each:
//! - the answer is never a 5xx;
//! - every 4xx is the receptor's JSON error, `{"name", "message"}`, both non-empty;
//! - the answer is the one parsing and validation predict (`InvalidJSON` with their
//!   message, `InvalidTask`/`InvalidLRP` naming the fields, 413 past the body limit,
//!   201/204 or a conflict/not-found for what they accept);
//! - the server still answers a plain request after it, and after them all a normal
//!   task is created and read back.
//!
//! Bounded: [`CASES`] requests (`PROPTEST_CASES=N` sends more); specs'
//! `validation_props` runs the same bodies in-process, many more of them.

#[path = "../../specs/tests/bodies/mod.rs"]
mod bodies;
mod common;

use std::net::SocketAddr;

use bodies::{Body, LRP_FIELDS, TASK_FIELDS, UPDATE_FIELDS};
use common::{lrp, post_json, request, start, task, Resp};
use lattice_bbs::api::MAX_BODY_BYTES;
use lattice_bbs::serve::ApiLimits;
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::{
    parse_request, DesiredLrpCreateRequest, DesiredLrpUpdateRequest, TaskCreateRequest,
};
use lattice_specs::validation::{validate_desired_lrp, validate_desired_lrp_update, validate_task};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{TestCaseError, TestRunner};
use serde_json::Value;

/// Requests sent (each a fresh connection to a loopback BBS: a few ms).
const CASES: u32 = 128;

#[derive(Debug, Clone)]
enum Call {
    CreateTask(Body),
    CreateLrp(Body),
    /// An update of `web` (which exists) or of `nope` (which does not).
    UpdateLrp(&'static str, Body),
}

fn calls() -> impl Strategy<Value = Call> {
    prop_oneof![
        bodies::bodies(bodies::task(), TASK_FIELDS).prop_map(Call::CreateTask),
        bodies::bodies(bodies::lrp(), LRP_FIELDS).prop_map(Call::CreateLrp),
        (
            select(vec!["web", "nope"]),
            bodies::bodies(bodies::update(), UPDATE_FIELDS)
        )
            .prop_map(|(guid, b)| Call::UpdateLrp(guid, b)),
    ]
}

/// What parsing and validation, in-process, make of a body.
enum Verdict {
    /// Not JSON of the call's shape: this message.
    BadJson(String),
    /// Refused by validation: this message (`invalid field …`).
    Invalid(String),
    Accepted,
}

fn verdict<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    validate: impl FnOnce(T) -> Result<(), lattice_specs::validation::ValidationErrors>,
) -> Verdict {
    match parse_request::<T>(body) {
        Err(e) => Verdict::BadJson(e.message),
        Ok(r) => match validate(r) {
            Err(e) => Verdict::Invalid(e.to_string()),
            Ok(()) => Verdict::Accepted,
        },
    }
}

/// The receptor's error shape: a JSON object of a non-empty `name` and `message`.
fn error_of(r: &Resp) -> Result<(String, String), TestCaseError> {
    prop_assert!(
        r.content_type.starts_with("application/json"),
        "{} answered as {:?}: {:?}",
        r.status,
        r.content_type,
        r.body
    );
    let v: Value = serde_json::from_str(&r.body)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {:?}", r.body)))?;
    let o = v
        .as_object()
        .ok_or_else(|| TestCaseError::fail(format!("not an object: {v}")))?;
    let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let (name, message) = (text("name"), text("message"));
    prop_assert!(
        o.len() == 2 && !name.is_empty() && !message.is_empty(),
        "not the receptor's error: {v}"
    );
    Ok((name, message))
}

async fn send(a: SocketAddr, call: &Call) -> (Resp, Verdict, &'static str, &'static [u16]) {
    let ct = [("Content-Type", "application/json")];
    match call {
        Call::CreateTask(b) => (
            request(a, "POST", "/v1/tasks", &ct, &b.0).await,
            verdict(&b.0, |r: TaskCreateRequest| {
                let (guid, domain, def) = r.into_model();
                validate_task(&guid, &domain, &def)
            }),
            ErrorName::InvalidTask.as_str(),
            // Created, or a guid generated twice.
            &[201, 409],
        ),
        Call::CreateLrp(b) => (
            request(a, "POST", "/v1/desired_lrps", &ct, &b.0).await,
            verdict(&b.0, |r: DesiredLrpCreateRequest| {
                validate_desired_lrp(&r.into_model())
            }),
            ErrorName::InvalidLRP.as_str(),
            &[201, 409],
        ),
        Call::UpdateLrp(guid, b) => (
            request(a, "PUT", &format!("/v1/desired_lrps/{guid}"), &ct, &b.0).await,
            verdict(&b.0, |r: DesiredLrpUpdateRequest| {
                validate_desired_lrp_update(&r.into_model())
            }),
            ErrorName::InvalidLRP.as_str(),
            if *guid == "web" { &[204] } else { &[404] },
        ),
    }
}

fn check(
    call: &Call,
    r: &Resp,
    verdict: Verdict,
    invalid: &str,
    ok: &[u16],
) -> Result<(), TestCaseError> {
    prop_assert!(r.status < 500, "{} for {call:?}: {}", r.status, r.body);
    let size = match call {
        Call::CreateTask(b) | Call::CreateLrp(b) | Call::UpdateLrp(_, b) => b.0.len(),
    };
    if size > MAX_BODY_BYTES {
        prop_assert_eq!(r.status, 413);
        let (name, _) = error_of(r)?;
        prop_assert_eq!(name, ErrorName::RequestEntityTooLarge.as_str());
        return Ok(());
    }
    match verdict {
        Verdict::BadJson(why) => {
            prop_assert_eq!(r.status, 400, "{}", r.body);
            let (name, message) = error_of(r)?;
            prop_assert_eq!(name, ErrorName::InvalidJSON.as_str());
            prop_assert_eq!(message, why);
        }
        Verdict::Invalid(why) => {
            prop_assert_eq!(r.status, 400, "{}", r.body);
            let (name, message) = error_of(r)?;
            prop_assert_eq!(name, invalid);
            prop_assert!(message.contains(&why), "{message:?} lacks {why:?}");
        }
        Verdict::Accepted => {
            prop_assert!(
                ok.contains(&r.status),
                "{} for {call:?}: {}",
                r.status,
                r.body
            );
            if r.status < 300 {
                prop_assert!(r.body.is_empty(), "{:?}", r.body);
            } else {
                error_of(r)?;
            }
        }
    }
    Ok(())
}

#[test]
fn generated_bodies_get_receptor_answers_never_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (bbs, _dir) = rt.block_on(start(None, ApiLimits::default()));
    let a = bbs.api_addr;
    let r = rt.block_on(post_json(a, "/v1/desired_lrps", &lrp("web", 1)));
    assert_eq!(r.status, 201, "{}", r.body);

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&calls(), |call| {
        let (r, verdict, invalid, ok) = rt.block_on(send(a, &call));
        check(&call, &r, verdict, invalid, ok)?;
        // Still answering.
        let v = rt.block_on(request(a, "GET", "/v1/version", &[], b""));
        prop_assert_eq!(v.status, 200, "after {:?}: {}", call, v.body);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }

    // After all that, a normal task is created and read back.
    let r = rt.block_on(post_json(a, "/v1/tasks", &task("after-the-fuzz")));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = rt.block_on(request(a, "GET", "/v1/tasks/after-the-fuzz", &[], b""));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["state"], "PENDING", "{}", r.body);
    rt.block_on(bbs.shutdown());
}
