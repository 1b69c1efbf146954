//! The `cf-router` routes of a DesiredLRP, one type for everyone who reads or writes them
//! (the router serves them, `ltc` writes and shows them):
//! `routes["cf-router"] = [{"hostnames": [...], "port": N}]`, each hostname served by the
//! LRP's instances at container port N.
//!
//! Routes are read leniently, as Diego's route emitter reads them: the BBS checks only
//! that they are JSON, so what is not a list is no routes, a hostname that is not a
//! string is skipped and a port that is not a number is 0.
//!
//! The `tcp-router` routes (external port to container port) are in [`tcp`].

pub mod tcp;

pub use tcp::{TcpRoute, TCP_ROUTER_KEY};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The router name under `routes` that Lattice's router serves.
pub const ROUTER_KEY: &str = "cf-router";

/// One `cf-router` route: these hostnames reach the container's `port`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CfRoute {
    pub hostnames: Vec<String>,
    pub port: u32,
}

impl CfRoute {
    /// The routes in a `cf-router` value, read leniently (see the module's note).
    pub fn list_from_value(v: &Value) -> Vec<CfRoute> {
        let Value::Array(entries) = v else {
            return vec![];
        };
        entries.iter().filter_map(CfRoute::from_entry).collect()
    }

    /// The routes in a DesiredLRP's stored routes (its router names to raw JSON).
    pub fn list_from_raw(routes: &std::collections::HashMap<String, String>) -> Vec<CfRoute> {
        routes
            .get(ROUTER_KEY)
            .and_then(|raw| serde_json::from_str::<Value>(raw).ok())
            .map(|v| CfRoute::list_from_value(&v))
            .unwrap_or_default()
    }

    /// The routes in the receptor's JSON routes (its router names to JSON values).
    pub fn list_from_json(routes: &BTreeMap<String, Value>) -> Vec<CfRoute> {
        routes
            .get(ROUTER_KEY)
            .map(CfRoute::list_from_value)
            .unwrap_or_default()
    }

    /// `routes` as the receptor's JSON routes: `{"cf-router": [...]}`.
    pub fn to_json(routes: &[CfRoute]) -> BTreeMap<String, Value> {
        let list = routes
            .iter()
            .map(|r| serde_json::to_value(r).expect("a route is plain JSON"))
            .collect();
        BTreeMap::from([(ROUTER_KEY.to_string(), Value::Array(list))])
    }

    /// One entry of the list; `None` when it is not an object.
    fn from_entry(e: &Value) -> Option<CfRoute> {
        let e = e.as_object()?;
        let hostnames = e
            .get("hostnames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str().map(String::from))
            .collect();
        // As the router always read it: a port past u32 wraps (validation keeps ports small).
        let port = e.get("port").and_then(Value::as_u64).unwrap_or(0) as u32;
        Some(CfRoute { hostnames, port })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(hostnames: &[&str], port: u32) -> CfRoute {
        CfRoute {
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
            port,
        }
    }

    #[test]
    fn routes_read_leniently() {
        let v = json!([
            {"hostnames": ["a.example", 7, "b.example"], "port": 8080},
            {"hostnames": "not-a-list", "port": 1},
            {"hostnames": ["c.example"], "port": "8080"},
            {"hostnames": ["d.example"]},
            "not-an-object",
        ]);
        assert_eq!(
            CfRoute::list_from_value(&v),
            vec![
                route(&["a.example", "b.example"], 8080),
                route(&[], 1),
                route(&["c.example"], 0),
                route(&["d.example"], 0),
            ]
        );
        assert!(CfRoute::list_from_value(&json!({"hostnames": ["a"]})).is_empty());
    }

    #[test]
    fn raw_and_json_routes_read_the_same() {
        let list = json!([{"hostnames": ["web.lattice.localhost"], "port": 8080}]);
        let raw = std::collections::HashMap::from([
            (ROUTER_KEY.to_string(), list.to_string()),
            ("other-router".to_string(), "[]".to_string()),
        ]);
        let want = vec![route(&["web.lattice.localhost"], 8080)];
        assert_eq!(CfRoute::list_from_raw(&raw), want);
        assert_eq!(
            CfRoute::list_from_json(&BTreeMap::from([(ROUTER_KEY.to_string(), list)])),
            want
        );
        let broken = std::collections::HashMap::from([(ROUTER_KEY.to_string(), "{x".into())]);
        assert!(CfRoute::list_from_raw(&broken).is_empty());
        assert!(CfRoute::list_from_raw(&Default::default()).is_empty());
    }

    #[test]
    fn written_routes_read_back() {
        let routes = vec![
            route(&["a.example", "b.example"], 8080),
            route(&["c"], 9000),
        ];
        let json = CfRoute::to_json(&routes);
        assert_eq!(
            serde_json::to_value(&json).unwrap(),
            json!({"cf-router": [
                {"hostnames": ["a.example", "b.example"], "port": 8080},
                {"hostnames": ["c"], "port": 9000},
            ]})
        );
        assert_eq!(CfRoute::list_from_json(&json), routes);
    }
}
