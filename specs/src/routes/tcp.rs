//! The `tcp-router` routes of a DesiredLRP, in the shape of Diego's routing API:
//! `routes["tcp-router"] = [{"external_port": N, "container_port": M}]` — the router
//! listens on port N and forwards each connection to an instance's container port M.
//!
//! Unlike `cf-router` routes these are checked when stored (`parse`): an external port
//! is a scarce, cluster-wide resource, so a malformed one is refused with the field named
//! rather than silently dropped. Readers (`list_from_raw`) skip what does not parse.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The router name under `routes` that the router's TCP listeners serve.
pub const TCP_ROUTER_KEY: &str = "tcp-router";

/// One TCP route: connections to the router's `external_port` reach `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TcpRoute {
    pub external_port: u16,
    pub container_port: u16,
}

impl TcpRoute {
    /// The routes of a stored `tcp-router` value, checked: every problem as
    /// (field, message), the field named as `routes.tcp-router[i].external_port`.
    pub fn parse(raw: &str) -> Result<Vec<TcpRoute>, Vec<(String, String)>> {
        let field = format!("routes.{TCP_ROUTER_KEY}");
        let v: Value = serde_json::from_str(raw)
            .map_err(|_| vec![(field.clone(), "must be valid JSON".to_string())])?;
        let Value::Array(entries) = v else {
            return Err(vec![(
                field,
                r#"must be a list of {"external_port": N, "container_port": M}"#.into(),
            )]);
        };
        let mut errs = vec![];
        let mut out = vec![];
        let mut seen = HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let Some(obj) = e.as_object() else {
                errs.push((
                    at,
                    r#"must be {"external_port": N, "container_port": M}"#.into(),
                ));
                continue;
            };
            let port = |name: &str, errs: &mut Vec<(String, String)>| {
                let p = obj
                    .get(name)
                    .and_then(Value::as_u64)
                    .filter(|p| (1..=65535).contains(p));
                if p.is_none() {
                    let got = obj
                        .get(name)
                        .map_or("nothing".to_string(), Value::to_string);
                    errs.push((
                        format!("{at}.{name}"),
                        format!("must be a port 1..65535 (got {got})"),
                    ));
                }
                p.map(|p| p as u16)
            };
            let (ext, cont) = (
                port("external_port", &mut errs),
                port("container_port", &mut errs),
            );
            let (Some(external_port), Some(container_port)) = (ext, cont) else {
                continue;
            };
            if !seen.insert(external_port) {
                errs.push((
                    format!("{at}.external_port"),
                    format!("{external_port} is listed twice: one external port reaches one container port"),
                ));
                continue;
            }
            out.push(TcpRoute {
                external_port,
                container_port,
            });
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs)
        }
    }

    /// `EXTERNAL:CONTAINER`, as `ltc create --tcp-route` takes it.
    pub fn parse_flag(s: &str) -> Result<TcpRoute, String> {
        let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
        match s.split_once(':') {
            Some((e, c)) => match (port(e), port(c)) {
                (Some(external_port), Some(container_port)) => Ok(TcpRoute {
                    external_port,
                    container_port,
                }),
                _ => Err(format!(
                    "{s:?}: both ports must be 1..65535, e.g. 5432:5432 (EXTERNAL:CONTAINER)"
                )),
            },
            None => Err(format!(
                "{s:?}: expected EXTERNAL:CONTAINER, e.g. 5432:5432 (the router's port, then the container's)"
            )),
        }
    }

    /// The routes in a DesiredLRP's stored routes; none when they do not parse.
    pub fn list_from_raw(routes: &HashMap<String, String>) -> Vec<TcpRoute> {
        routes
            .get(TCP_ROUTER_KEY)
            .and_then(|raw| TcpRoute::parse(raw).ok())
            .unwrap_or_default()
    }

    /// The routes in the receptor's JSON routes; none when they do not parse.
    pub fn list_from_json(routes: &BTreeMap<String, Value>) -> Vec<TcpRoute> {
        routes
            .get(TCP_ROUTER_KEY)
            .and_then(|v| TcpRoute::parse(&v.to_string()).ok())
            .unwrap_or_default()
    }

    /// `routes` as the `tcp-router` JSON value.
    pub fn to_value(routes: &[TcpRoute]) -> Value {
        serde_json::to_value(routes).expect("a route is plain JSON")
    }
}

/// The first of `wanted`'s external ports that an app other than `guid` holds, as
/// (port, that app's guid); `apps` are every app's guid and TCP routes.
pub fn conflict<'a>(
    guid: &str,
    wanted: &[TcpRoute],
    apps: impl IntoIterator<Item = (&'a str, Vec<TcpRoute>)>,
) -> Option<(u16, &'a str)> {
    let wanted: HashSet<u16> = wanted.iter().map(|r| r.external_port).collect();
    if wanted.is_empty() {
        return None;
    }
    let mut found: Vec<(u16, &str)> = apps
        .into_iter()
        .filter(|(other, _)| *other != guid)
        .flat_map(|(other, routes)| {
            routes
                .into_iter()
                .filter(|r| wanted.contains(&r.external_port))
                .map(move |r| (r.external_port, other))
        })
        .collect();
    found.sort();
    found.into_iter().next()
}

impl std::fmt::Display for TcpRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.external_port, self.container_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(external_port: u16, container_port: u16) -> TcpRoute {
        TcpRoute {
            external_port,
            container_port,
        }
    }

    #[test]
    fn routes_parse_and_write_back() {
        let v = json!([
            {"external_port": 5432, "container_port": 5432},
            {"external_port": 61000, "container_port": 9000, "router_group_guid": "default"},
        ]);
        let routes = TcpRoute::parse(&v.to_string()).unwrap();
        assert_eq!(routes, [route(5432, 5432), route(61000, 9000)]);
        assert_eq!(
            TcpRoute::to_value(&routes),
            json!([
                {"external_port": 5432, "container_port": 5432},
                {"external_port": 61000, "container_port": 9000},
            ])
        );
        let raw = HashMap::from([(TCP_ROUTER_KEY.to_string(), v.to_string())]);
        assert_eq!(TcpRoute::list_from_raw(&raw), routes);
        let json = BTreeMap::from([(TCP_ROUTER_KEY.to_string(), v)]);
        assert_eq!(TcpRoute::list_from_json(&json), routes);
        assert_eq!(routes[1].to_string(), "61000:9000");
    }

    #[test]
    fn bad_routes_name_the_field() {
        let errs = TcpRoute::parse(
            &json!([
                {"external_port": 0, "container_port": 80},
                {"container_port": 70000},
                "x",
                {"external_port": 9000, "container_port": 1},
                {"external_port": 9000, "container_port": 2},
            ])
            .to_string(),
        )
        .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "routes.tcp-router[0].external_port",
                "routes.tcp-router[1].external_port",
                "routes.tcp-router[1].container_port",
                "routes.tcp-router[2]",
                "routes.tcp-router[4].external_port",
            ]
        );
        assert!(errs[0].1.contains("1..65535 (got 0)"), "{errs:?}");
        assert!(errs[1].1.contains("got nothing"), "{errs:?}");
        assert!(errs[4].1.contains("listed twice"), "{errs:?}");
        let not_a_list = TcpRoute::parse(r#"{"external_port": 1}"#).unwrap_err();
        assert_eq!(not_a_list[0].0, "routes.tcp-router");
        assert!(TcpRoute::parse("{x").is_err());
        let raw = HashMap::from([(TCP_ROUTER_KEY.to_string(), "[{}]".to_string())]);
        assert!(TcpRoute::list_from_raw(&raw).is_empty());
    }

    #[test]
    fn a_port_held_by_another_app_conflicts() {
        let apps = || {
            vec![
                ("db", vec![route(5432, 5432), route(6000, 1)]),
                ("web", vec![route(9000, 9000)]),
                ("cache", vec![route(6000, 2)]),
            ]
        };
        // The app's own ports are not a conflict (an update keeps them).
        assert_eq!(
            conflict("db", &[route(5432, 1), route(6001, 1)], apps()),
            None
        );
        assert_eq!(conflict("new", &[route(6001, 1)], apps()), None);
        assert_eq!(conflict("new", &[], apps()), None);
        assert_eq!(
            conflict("new", &[route(9000, 1)], apps()),
            Some((9000, "web"))
        );
        // The lowest port first, then the first app by name: one answer whatever the order.
        assert_eq!(
            conflict("web", &[route(6000, 1), route(5432, 1)], apps()),
            Some((5432, "db"))
        );
        assert_eq!(
            conflict("db", &[route(6000, 1)], apps()),
            Some((6000, "cache"))
        );
    }

    #[test]
    fn flags_parse() {
        assert_eq!(TcpRoute::parse_flag("5432:5433"), Ok(route(5432, 5433)));
        for bad in ["5432", "0:80", "80:", "a:b", "70000:80"] {
            assert!(TcpRoute::parse_flag(bad).is_err(), "{bad}");
        }
        assert!(TcpRoute::parse_flag("5432")
            .unwrap_err()
            .contains("EXTERNAL:CONTAINER"));
    }
}
