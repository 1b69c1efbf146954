use super::*;

#[test]
fn v1_paths_are_told_apart() {
    use V1Request::*;
    let id = "a".repeat(64);
    let cases = [
        ("/v1/_ping", Some(Ping)),
        ("/v1/_ping/", Some(Ping)),
        (
            "/v1/repositories/myapp/images",
            Some(Images("myapp".into())),
        ),
        (
            "/v1/repositories/library/my-app/tags",
            Some(Tags("library/my-app".into())),
        ),
        (
            "/v1/repositories/team/web.app/tags/v1.2",
            Some(Tag("team/web.app".into(), "v1.2".into())),
        ),
        (
            &format!("/v1/images/{id}/json") as &str,
            Some(ImageJson(id.clone())),
        ),
        (
            &format!("/v1/images/{id}/ancestry"),
            Some(Ancestry(id.clone())),
        ),
        (&format!("/v1/images/{id}/layer"), Some(Layer(id.clone()))),
        // Not names or ids the registry could hold: refused before any upstream call.
        ("/v1/repositories/My/images", Some(Unsupported)),
        ("/v1/repositories/../tags", Some(Unsupported)),
        ("/v1/repositories/a//b/tags", Some(Unsupported)),
        ("/v1/repositories/a/tags/-x", Some(Unsupported)),
        ("/v1/images/../json", Some(Unsupported)),
        ("/v1/images/abc/json", Some(Unsupported)),
        ("/v1/search", Some(Unsupported)),
        ("/v2/", None),
        ("/v1", None),
    ];
    for (path, want) in cases {
        assert_eq!(v1_request(path), want, "{path}");
    }
}

#[test]
fn library_names_fall_back_to_the_bare_name() {
    assert_eq!(upstream_names("library/myapp"), ["library/myapp", "myapp"]);
    assert_eq!(upstream_names("myapp"), ["myapp"]);
    assert_eq!(upstream_names("team/myapp"), ["team/myapp"]);
    assert_eq!(upstream_names("library/a/b"), ["library/a/b"]);
}

#[test]
fn ids_are_64_hex_and_name_the_repository_and_tag() {
    let a = image_id("myapp", "latest");
    assert_eq!(a.len(), 64);
    assert!(is_id(&a));
    assert_ne!(a, image_id("myapp", "v2"));
    assert_ne!(a, image_id("other", "latest"));
    assert_eq!(a, image_id("myapp", "latest"));
}

#[test]
fn known_ids_are_bounded_oldest_first() {
    let mut k = KnownIds::new(2);
    let a = k.remember("a", "latest");
    let b = k.remember("b", "latest");
    assert_eq!(
        k.remember("a", "latest"),
        a,
        "the same id again, not a new entry"
    );
    assert_eq!(k.len(), 2);
    let c = k.remember("c", "latest");
    assert_eq!(k.len(), 2);
    assert!(k.get(&a).is_none(), "the oldest went");
    assert_eq!(k.get(&b), Some(&("b".to_string(), "latest".to_string())));
    assert_eq!(k.get(&c), Some(&("c".to_string(), "latest".to_string())));
}

#[test]
fn an_oci_config_gets_its_run_settings_in_both_configs() {
    let config = json!({
        "created": "2026-01-02T03:04:05.123456789Z",
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": ["/bin/server"],
            "Cmd": ["--port", "8080"],
            "WorkingDir": "/srv",
            "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
            "Env": ["PATH=/bin"]
        },
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let v1 = image_json(&"b".repeat(64), &config);
    assert_eq!(v1["id"], json!("b".repeat(64)));
    assert_eq!(v1["config"]["Cmd"], json!(["--port", "8080"]));
    assert_eq!(v1["config"]["Entrypoint"], json!(["/bin/server"]));
    assert_eq!(v1["config"]["WorkingDir"], json!("/srv"));
    // The original ltc reads the ports from container_config.
    assert_eq!(
        v1["container_config"]["ExposedPorts"],
        json!({"8080/tcp": {}, "53/udp": {}})
    );
    assert_eq!(v1["created"], json!("2026-01-02T03:04:05.123456789Z"));
    assert!(
        v1.get("parent").is_none(),
        "no parent: one image, no layer chain"
    );
}

#[test]
fn a_docker_build_container_config_with_ports_is_kept() {
    let config = json!({
        "config": {"Cmd": ["run"], "ExposedPorts": {"8080/tcp": {}}},
        "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) EXPOSE 9090"], "ExposedPorts": {"9090/tcp": {}}},
        "created": "not a time"
    });
    let v1 = image_json(&"c".repeat(64), &config);
    assert_eq!(
        v1["container_config"]["ExposedPorts"],
        json!({"9090/tcp": {}})
    );
    assert!(v1.get("created").is_none(), "Go could not parse it");
    // One without ports (a base image's build step) takes the run config's.
    let config = json!({
        "config": {"ExposedPorts": {"8080/tcp": {}}},
        "container_config": {"Cmd": ["sh"], "ExposedPorts": null}
    });
    let v1 = image_json(&"c".repeat(64), &config);
    assert_eq!(
        v1["container_config"]["ExposedPorts"],
        json!({"8080/tcp": {}})
    );
    assert_eq!(v1["os"], json!("linux"));
}
