//! Generators of request bodies for the public API's calls that take a definition
//! (`POST /v1/tasks`, `POST /v1/desired_lrps`, `PUT /v1/desired_lrps/GUID`): a valid
//! request, then broken in a few places (huge, negative and fractional numbers, deep and
//! wide action trees, long strings, odd unicode, NUL, missing, extra and mistyped
//! fields, values replaced anywhere in the tree), then sometimes broken as bytes (cut
//! short, a byte inserted, trailing garbage, not UTF-8).
//!
//! Shared by `specs/tests/validation_props.rs` (parsing and validation in-process) and
//! `bbs/tests/api_props.rs` (the same bodies over HTTP), which includes this file.
#![allow(dead_code)]

use lattice_specs::validation::{
    MAX_ACTIONS, MAX_ANNOTATION_BYTES, MAX_DISK_MB, MAX_EXEC_STRING_BYTES, MAX_GUID_LEN,
    MAX_INSTANCES, MAX_MEMORY_MB, MAX_NAME_BYTES, MAX_PIDS,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Map, Value};

/// The fields of each request (what a refusal may name first).
pub const TASK_FIELDS: &[&str] = &[
    "task_guid",
    "domain",
    "rootfs",
    "action",
    "env",
    "cpu_weight",
    "disk_mb",
    "memory_mb",
    "log_guid",
    "log_source",
    "metrics_guid",
    "result_file",
    "completion_callback_url",
    "annotation",
    "privileged",
    "egress_rules",
    "placement_tags",
    "volume_mounts",
    "max_pids",
];

pub const LRP_FIELDS: &[&str] = &[
    "process_guid",
    "domain",
    "rootfs",
    "instances",
    "env",
    "setup",
    "action",
    "monitor",
    "start_timeout",
    "disk_mb",
    "memory_mb",
    "cpu_weight",
    "privileged",
    "ports",
    "routes",
    "log_guid",
    "log_source",
    "metrics_guid",
    "annotation",
    "egress_rules",
    "check_definition",
    "placement_tags",
    "volume_mounts",
    "max_pids",
    "crash_policy",
    "host_network",
];

pub const UPDATE_FIELDS: &[&str] = &["instances", "routes", "annotation"];

/// The field a refusal's path starts with: `action` for `action.run.args[0]`.
pub fn top_field(path: &str) -> &str {
    path.split(['.', '[']).next().unwrap_or(path)
}

// ------------------------------------------------------------------ values

/// Lengths at and around the documented limits, and a few large ones.
const LENGTHS: &[usize] = &[
    1,
    MAX_GUID_LEN - 1,
    MAX_GUID_LEN,
    MAX_GUID_LEN + 1,
    MAX_NAME_BYTES,
    MAX_NAME_BYTES + 1,
    4096,
    4097,
    MAX_ANNOTATION_BYTES,
    MAX_ANNOTATION_BYTES + 1,
    MAX_EXEC_STRING_BYTES - 3,
    MAX_EXEC_STRING_BYTES,
    300_000,
];

/// Strings a client should not send, and some it may.
pub fn odd_string() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just(" \t".to_string()),
        "[a-zA-Z0-9_-]{1,16}",
        // Any characters (proptest's `.` is any char but '\n').
        ".{0,24}",
        "\\PC{0,24}",
        // NUL inside.
        "[a-z]{0,4}\u{0}[a-z]{0,4}",
        select(vec![
            "é",
            "\u{202E}gnp.exe",
            "\u{FEFF}bom",
            "🦀",
            "\u{10FFFF}",
            "a\u{0301}",
            "\u{0}",
            "../../../etc/shadow",
            "/.lattice/pause",
            "\\u0000",
            "\r\n",
            "\"",
            "{}",
            "preloaded:",
            "docker://",
            "http://",
            "-",
            "_",
        ])
        .prop_map(String::from),
        // Long, in characters of 1, 2 and 4 bytes.
        (select(LENGTHS), select(vec!['x', 'é', '🦀', '\u{0}']))
            .prop_map(|(n, c)| std::iter::repeat_n(c, n).collect()),
    ]
    .boxed()
}

/// Numbers at and beyond every bound, of every JSON kind.
pub fn odd_number() -> BoxedStrategy<Value> {
    let bounds: Vec<i64> = vec![
        0,
        1,
        -1,
        100,
        101,
        65_535,
        65_536,
        MAX_INSTANCES as i64,
        MAX_INSTANCES as i64 + 1,
        MAX_MEMORY_MB as i64 + 1,
        MAX_DISK_MB as i64 + 1,
        MAX_PIDS as i64 + 1,
        1_000_000_000,
        i32::MAX as i64,
        i32::MAX as i64 + 1,
        i32::MIN as i64,
        i32::MIN as i64 - 1,
        u32::MAX as i64,
        u32::MAX as i64 + 1,
        i64::MAX,
        i64::MIN,
    ];
    prop_oneof![
        select(bounds).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        select(vec![0.5, -1.5, 1e308, -1e308, 1e-300, -0.0, 1e10]).prop_map(Value::from),
    ]
    .boxed()
}

/// Any value, mostly of the wrong kind for the field it lands in.
pub fn odd_value() -> BoxedStrategy<Value> {
    prop_oneof![
        3 => odd_number(),
        3 => odd_string().prop_map(Value::String),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => Just(Value::Null),
        1 => Just(json!([])),
        1 => Just(json!({})),
        1 => vec(odd_string(), 0..4).prop_map(|v| json!(v)),
        1 => proptest::collection::btree_map(odd_string(), odd_number(), 0..3)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        // Nested past serde_json's recursion limit (128) and short of it.
        1 => (1usize..200).prop_map(|d| (0..d).fold(json!(1), |v, _| json!([v]))),
    ]
    .boxed()
}

// ----------------------------------------------------------------- actions

fn env_var() -> impl Strategy<Value = Value> {
    prop_oneof![
        9 => ("[A-Z_]{1,8}", "[ -~]{0,16}").prop_map(|(n, v)| json!({"name": n, "value": v})),
        1 => (odd_string(), odd_string()).prop_map(|(n, v)| json!({"name": n, "value": v})),
    ]
}

pub fn env() -> impl Strategy<Value = Value> {
    vec(env_var(), 0..3).prop_map(Value::from)
}

fn leaf_action() -> impl Strategy<Value = Value> {
    let run = (
        prop_oneof![
            8 => select(vec!["/bin/true", "sh", "/lattice-app"]),
            1 => Just(""),
        ],
        vec("[ -~]{0,12}", 0..3),
        env(),
        proptest::option::of(prop_oneof![8 => 0u64..4096, 1 => any::<u64>()]),
    )
        .prop_map(|(path, args, env, nofile)| {
            let mut run = json!({"path": path, "args": args, "env": env});
            if let Some(n) = nofile {
                run["resource_limits"] = json!({ "nofile": n });
            }
            json!({ "run": run })
        });
    let checksum = prop_oneof![
        4 => Just(("", String::new())),
        4 => "[0-9a-f]{64}".prop_map(|h| ("sha256", h)),
        1 => (select(vec!["", "sha256", "md5", "crc32"]), "[0-9a-fx]{0,8}"),
    ];
    let download = checksum.prop_map(|(alg, value)| {
        json!({"download": {"from": "http://blobs.local/app.tgz", "to": "/app",
                "checksum_algorithm": alg, "checksum_value": value}})
    });
    let upload = Just(json!({"upload": {"from": "/tmp/out", "to": "http://blobs.local/out"}}));
    prop_oneof![4 => run, 1 => download, 1 => upload]
}

/// A tree of actions, mostly valid (a list may be empty, a timeout not positive).
pub fn action_tree() -> BoxedStrategy<Value> {
    leaf_action()
        .prop_recursive(6, 48, 4, |inner| {
            let timeout = prop_oneof![
                4 => select(vec![1i64, 5_000_000_000, i64::MAX]),
                1 => select(vec![0i64, -1]),
            ];
            prop_oneof![
                (inner.clone(), timeout)
                    .prop_map(|(a, t)| json!({"timeout": {"action": a, "timeout": t}})),
                (inner.clone(), "[ -~]{0,8}")
                    .prop_map(|(a, m)| json!({"emit_progress": {"action": a, "start_message": m}})),
                inner.clone().prop_map(|a| json!({"try": {"action": a}})),
                (
                    select(vec!["serial", "parallel", "codependent"]),
                    prop_oneof![8 => vec(inner.clone(), 1..4), 1 => vec(inner, 0..1)]
                )
                    .prop_map(|(k, v)| json!({ k: {"actions": v} })),
            ]
        })
        .boxed()
}

/// A chain of one-child actions around a Run: past `MAX_ACTION_DEPTH` (32) and past
/// serde_json's recursion limit (two JSON levels a link).
pub fn deep_action() -> impl Strategy<Value = Value> {
    (1usize..90, select(vec!["try", "emit_progress", "timeout"])).prop_map(|(depth, kind)| {
        (0..depth).fold(
            json!({"run": {"path": "/bin/true"}}),
            |a, _| json!({ kind: {"action": a, "timeout": 1_000_000_000} }),
        )
    })
}

/// A list of Runs around `MAX_ACTIONS` long.
pub fn wide_action() -> impl Strategy<Value = Value> {
    (
        MAX_ACTIONS - 2..MAX_ACTIONS + 3,
        select(vec!["serial", "parallel", "codependent"]),
    )
        .prop_map(|(n, kind)| {
            let runs = vec![json!({"run": {"path": "/bin/true"}}); n];
            json!({ kind: {"actions": runs} })
        })
}

pub fn action() -> BoxedStrategy<Value> {
    prop_oneof![8 => action_tree(), 1 => deep_action(), 1 => wide_action()].boxed()
}

// ---------------------------------------------------------------- requests

pub fn guid() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,24}"
}

fn rootfs() -> impl Strategy<Value = &'static str> {
    select(vec![
        "preloaded:busybox",
        "docker:///cloudfoundry/lattice-app#latest",
        "oci:/images/app:v1",
    ])
}

fn routes() -> impl Strategy<Value = Value> {
    ("[a-z]{1,8}", 1u32..65536).prop_map(|(host, port)| {
        json!({"cf-router": [{"hostnames": [format!("{host}.lattice.localhost")], "port": port}]})
    })
}

fn tags() -> impl Strategy<Value = Vec<String>> {
    vec("[a-z]{1,8}", 0..2)
}

/// A valid (or nearly valid: its actions may not be) `POST /v1/tasks` body.
pub fn task() -> impl Strategy<Value = Value> {
    (
        (guid(), rootfs(), action(), env()),
        (0u32..=100, 0i32..4096, 0i32..4096, 0i32..1024),
        (
            select(vec!["", "/tmp/result"]),
            select(vec!["", "http://callback.local/done"]),
            "[ -~]{0,16}",
            tags(),
        ),
    )
        .prop_map(
            |(
                (guid, rootfs, action, env),
                (cpu, mem, disk, pids),
                (result, callback, annotation, tags),
            )| {
                json!({
                    "task_guid": guid, "domain": "apps", "rootfs": rootfs, "action": action,
                    "env": env, "cpu_weight": cpu, "memory_mb": mem, "disk_mb": disk,
                    "max_pids": pids, "log_guid": guid, "log_source": "TASK",
                    "metrics_guid": "", "result_file": result,
                    "completion_callback_url": callback, "annotation": annotation,
                    "privileged": false, "placement_tags": tags,
                    "egress_rules": [{"protocol": "tcp", "destinations": ["0.0.0.0/0"], "ports": [80, 443]}]
                })
            },
        )
}

/// A valid (or nearly so) `POST /v1/desired_lrps` body, of a few instances.
pub fn lrp() -> impl Strategy<Value = Value> {
    let optional_action = || proptest::option::weighted(0.3, action_tree());
    (
        (
            guid(),
            rootfs(),
            action(),
            optional_action(),
            optional_action(),
        ),
        (0i32..4, 0u64..600, 0u32..=100, 0i32..4096, 0i32..4096),
        (
            vec(1u32..65536, 0..3),
            routes(),
            env(),
            tags(),
            "[ -~]{0,16}",
        ),
        (
            proptest::option::of(1u32..65536),
            proptest::option::of((1u32..5, 0u64..60_000)),
        ),
    )
        .prop_map(
            |(
                (guid, rootfs, action, setup, monitor),
                (instances, start_timeout, cpu, mem, disk),
                (ports, routes, env, tags, annotation),
                (check_port, crash),
            )| {
                let mut v = json!({
                    "process_guid": guid, "domain": "apps", "rootfs": rootfs,
                    "instances": instances, "action": action, "start_timeout": start_timeout,
                    "cpu_weight": cpu, "memory_mb": mem, "disk_mb": disk, "ports": ports,
                    "routes": routes, "env": env, "placement_tags": tags,
                    "annotation": annotation, "log_guid": guid, "log_source": "APP",
                    "metrics_guid": guid, "privileged": false,
                });
                if let Some(a) = setup {
                    v["setup"] = a;
                }
                if let Some(a) = monitor {
                    v["monitor"] = a;
                }
                if let Some(p) = check_port {
                    v["check_definition"] = json!({"checks": [{"tcp": {"port": p}},
                        {"http": {"port": p, "path": "/health"}}]});
                }
                if let Some((restarts, backoff)) = crash {
                    v["crash_policy"] =
                        json!({"immediate_restarts": restarts, "base_backoff_ms": backoff});
                }
                v
            },
        )
}

/// A valid `PUT /v1/desired_lrps/GUID` body (any of its three fields).
pub fn update() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(0i32..4),
        proptest::option::of(routes()),
        proptest::option::of("[ -~]{0,16}"),
    )
        .prop_map(|(instances, routes, annotation)| {
            let mut m = Map::new();
            if let Some(i) = instances {
                m.insert("instances".into(), json!(i));
            }
            if let Some(r) = routes {
                m.insert("routes".into(), r);
            }
            if let Some(a) = annotation {
                m.insert("annotation".into(), json!(a));
            }
            Value::Object(m)
        })
}

// ---------------------------------------------------------------- breaking

/// One way to break a request.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Set a top-level field (one of the request's, or an unknown one).
    SetField(String, Value),
    /// Replace a value anywhere in the request.
    Replace(Index, Value),
    /// Remove a value anywhere in the request (an object's key or an array's item).
    Remove(Index),
    /// Add a key to an object anywhere in the request.
    AddKey(Index, String, Value),
    /// Send something else than an object.
    Root(Value),
}

pub fn mutation(fields: &'static [&'static str]) -> impl Strategy<Value = Mutation> {
    let field = move || select(fields).prop_map(String::from);
    prop_oneof![
        4 => (field(), odd_value()).prop_map(|(f, v)| Mutation::SetField(f, v)),
        1 => (field(), action()).prop_map(|(f, v)| Mutation::SetField(f, v)),
        1 => (odd_string(), odd_value()).prop_map(|(f, v)| Mutation::SetField(f, v)),
        3 => (any::<Index>(), odd_value()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        2 => any::<Index>().prop_map(Mutation::Remove),
        1 => (any::<Index>(), odd_string(), odd_value())
            .prop_map(|(i, k, v)| Mutation::AddKey(i, k, v)),
        1 => prop_oneof![odd_value(), action()].prop_map(Mutation::Root),
    ]
}

fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// JSON pointers of every value below the root.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", pointer_token(k));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn pick(v: &Value, i: &Index) -> Option<String> {
    let mut all = Vec::new();
    pointers(v, String::new(), &mut all);
    (!all.is_empty()).then(|| all[i.index(all.len())].clone())
}

pub fn apply(v: &mut Value, m: &Mutation) {
    match m {
        Mutation::SetField(f, x) => {
            if let Value::Object(o) = v {
                o.insert(f.clone(), x.clone());
            }
        }
        Mutation::Replace(i, x) => {
            if let Some(p) = pick(v, i) {
                *v.pointer_mut(&p).unwrap() = x.clone();
            }
        }
        Mutation::Remove(i) => {
            if let Some(p) = pick(v, i) {
                let (parent, last) = p.rsplit_once('/').unwrap();
                let key = last.replace("~1", "/").replace("~0", "~");
                match v.pointer_mut(parent).unwrap() {
                    Value::Object(o) => {
                        o.remove(&key);
                    }
                    Value::Array(a) => {
                        a.remove(key.parse::<usize>().unwrap());
                    }
                    _ => unreachable!("a pointer's parent holds it"),
                }
            }
        }
        Mutation::AddKey(i, k, x) => {
            let mut objects = Vec::new();
            let mut all = vec![String::new()];
            pointers(v, String::new(), &mut all);
            for p in all {
                if v.pointer(&p).is_some_and(Value::is_object) {
                    objects.push(p);
                }
            }
            if !objects.is_empty() {
                let p = &objects[i.index(objects.len())];
                if let Some(Value::Object(o)) = v.pointer_mut(p) {
                    o.insert(k.clone(), x.clone());
                }
            }
        }
        Mutation::Root(x) => *v = x.clone(),
    }
}

/// How the bytes of a body are broken after it is written.
#[derive(Debug, Clone)]
pub enum ByteMutation {
    None,
    /// Cut short.
    Truncate(Index),
    /// One byte inserted (a NUL, a byte that is never UTF-8, JSON punctuation).
    Insert(Index, u8),
    /// Bytes after the JSON.
    Append(Vec<u8>),
    /// Nothing at all, or only whitespace (what the API takes as an empty request).
    Blank(Vec<u8>),
}

pub fn byte_mutation() -> impl Strategy<Value = ByteMutation> {
    prop_oneof![
        12 => Just(ByteMutation::None),
        1 => any::<Index>().prop_map(ByteMutation::Truncate),
        1 => (any::<Index>(), prop_oneof![
                select(vec![0u8, 0xff, 0xc3, b'"', b'{', b']', b',', b'\\', b' ']),
                any::<u8>()
            ])
            .prop_map(|(i, b)| ByteMutation::Insert(i, b)),
        1 => prop_oneof![
                Just(b"}".to_vec()),
                Just(b" null".to_vec()),
                Just(vec![0u8]),
                vec(any::<u8>(), 1..8)
            ]
            .prop_map(ByteMutation::Append),
        1 => select(vec![b"".to_vec(), b" \r\n\t".to_vec(), b"null".to_vec()]).prop_map(ByteMutation::Blank),
    ]
}

/// A request broken by `muts`, written out, then broken as bytes by `bytes`.
pub fn body(mut request: Value, muts: &[Mutation], bytes: &ByteMutation) -> Vec<u8> {
    for m in muts {
        apply(&mut request, m);
    }
    let mut out = serde_json::to_vec(&request).unwrap();
    match bytes {
        ByteMutation::None => {}
        ByteMutation::Truncate(i) => out.truncate(i.index(out.len())),
        ByteMutation::Insert(i, b) => out.insert(i.index(out.len() + 1), *b),
        ByteMutation::Append(tail) => out.extend_from_slice(tail),
        ByteMutation::Blank(b) => out = b.clone(),
    }
    out
}

/// A request body (shown as text, cut short, when a case fails).
#[derive(Clone)]
pub struct Body(pub Vec<u8>);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = String::from_utf8_lossy(&self.0);
        let shown: String = text.chars().take(4000).collect();
        write!(f, "Body({} bytes: {shown:?})", self.0.len())
    }
}

/// A body for a call whose valid requests `base` makes and whose fields are `fields`:
/// most often broken in one to three places, sometimes left valid.
pub fn bodies(
    base: impl Strategy<Value = Value>,
    fields: &'static [&'static str],
) -> impl Strategy<Value = Body> {
    let muts = prop_oneof![1 => Just(vec![]), 3 => vec(mutation(fields), 1..4)];
    (base, muts, byte_mutation())
        .prop_map(|(request, muts, bytes)| Body(body(request, &muts, &bytes)))
}
