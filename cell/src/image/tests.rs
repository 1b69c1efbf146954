//! The image module's unit tests: configurations, defaults, layouts and unpacking.

use std::path::Path;

use super::unpack::safe_join;
use super::*;

#[test]
fn configs_give_defaults() {
    let c = parse_config(
        br#"{"config": {"Env": ["PATH=/bin", "A=b=c"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "x"],
             "WorkingDir": "/srv", "User": "vcap", "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}}}"#,
    )
    .unwrap();
    assert_eq!(
        c.env,
        vec![("PATH".into(), "/bin".into()), ("A".into(), "b=c".into())]
    );
    assert_eq!((c.workdir.as_str(), c.user.as_str()), ("/srv", "vcap"));
    assert_eq!(c.exposed_ports, vec![53, 8080]);
    assert_eq!(parse_config(b"{}").unwrap(), ImageConfig::default());
    assert!(parse_config(b"nope").is_err());
}

#[test]
fn layouts_unpack_once_with_whiteouts_and_checked_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    write_layout(
        &layout,
        "v1",
        None,
        &[
            vec![
                ("etc/", ""),
                ("etc/a", "one"),
                ("etc/gone", "x"),
                ("opaque/", ""),
                ("opaque/old", "o"),
            ],
            vec![
                ("etc/.wh.gone", ""),
                ("opaque/.wh..wh..opq", ""),
                ("opaque/new", "n"),
            ],
        ],
        &serde_json::json!({"config": {"WorkingDir": "/etc"}}),
    )
    .unwrap();
    let store = ImageStore::new(tmp.path().join("images"), vec![], Default::default());
    let img = store.from_layout(&layout, Some("v1")).unwrap();
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.config.workdir, "/etc");
    assert_eq!(
        std::fs::read_to_string(img.layers[0].join("etc/a")).unwrap(),
        "one"
    );
    let wh = std::fs::symlink_metadata(img.layers[1].join("etc/gone")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(
        wh.file_type().is_char_device(),
        "a whiteout is a 0/0 char device"
    );
    assert!(xattr_is_set(&img.layers[1].join("opaque")));
    // Leftovers of an interrupted unpack or pull are cleared when the cache opens.
    std::fs::create_dir_all(tmp.path().join("images/layers/sha256/.tmp-dead")).unwrap();
    std::fs::create_dir_all(tmp.path().join("images/blobs")).unwrap();
    std::fs::write(tmp.path().join("images/blobs/.pull-dead"), b"x").unwrap();
    let store = ImageStore::new(tmp.path().join("images"), vec![], Default::default());
    assert!(!tmp.path().join("images/layers/sha256/.tmp-dead").exists());
    assert!(!tmp.path().join("images/blobs/.pull-dead").exists());
    // Cached: the same directories, nothing unpacked twice.
    let again = store.from_layout(&layout, None).unwrap();
    assert_eq!(again.layers, img.layers);
    assert!(store
        .from_layout(&layout, Some("v2"))
        .unwrap_err()
        .to_string()
        .contains("no image tagged"));

    // A corrupted blob is refused and leaves nothing behind.
    let store2 = ImageStore::new(tmp.path().join("images2"), vec![], Default::default());
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(&md)).unwrap())
            .unwrap();
    let l0 = m["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = layout.join("blobs/sha256").join(&l0);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let e = format!("{:#}", store2.from_layout(&layout, None).unwrap_err());
    assert!(e.contains("unpacking layer"), "{e}");
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("images2/layers/sha256"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "no half-unpacked layer kept");
}

fn xattr_is_set(p: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut buf = [0u8; 4];
    // SAFETY: `path` and the name are NUL-terminated strings alive for the call, and
    // the kernel writes at most `buf.len()` bytes into `buf`, which outlives it.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

#[test]
fn image_defaults_fill_what_the_request_leaves_out() {
    let cfg = ImageConfig {
        workdir: "/srv".into(),
        user: "vcap".into(),
        ..Default::default()
    };
    let run = |dir: &str| models::Action {
        action: Some(models::action::Action::Run(models::RunAction {
            path: "x".into(),
            dir: dir.into(),
            ..Default::default()
        })),
    };
    let tree = models::Action {
        action: Some(models::action::Action::Serial(models::SerialAction {
            actions: vec![run(""), run("/mine")],
            ..Default::default()
        })),
    };
    let Some(models::action::Action::Serial(s)) = with_defaults(&tree, &cfg).action else {
        panic!()
    };
    let dirs: Vec<_> = s
        .actions
        .iter()
        .map(|a| match &a.action {
            Some(models::action::Action::Run(r)) => (r.dir.clone(), r.user.clone()),
            _ => panic!(),
        })
        .collect();
    assert_eq!(
        dirs,
        vec![
            ("/srv".into(), "vcap".into()),
            ("/mine".into(), "vcap".into())
        ]
    );
    let cmd = ImageConfig {
        entrypoint: vec!["/bin/sh".into(), "-c".into()],
        cmd: vec!["echo default".into()],
        ..Default::default()
    };
    let bare = |args: &[&str]| models::Action {
        action: Some(models::action::Action::Run(models::RunAction {
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })),
    };
    let argv = |a: models::Action| match a.action {
        Some(models::action::Action::Run(r)) => (r.path, r.args),
        _ => panic!(),
    };
    assert_eq!(
        argv(with_defaults(&bare(&[]), &cmd)),
        ("/bin/sh".into(), vec!["-c".into(), "echo default".into()])
    );
    assert_eq!(
        argv(with_defaults(&bare(&["echo mine"]), &cmd)),
        ("/bin/sh".into(), vec!["-c".into(), "echo mine".into()]),
        "args replace cmd, the entrypoint stays"
    );
    assert!(missing_command(&with_defaults(
        &bare(&[]),
        &ImageConfig::default()
    )));
    assert!(!missing_command(&with_defaults(&bare(&[]), &cmd)));
    let env = merge_env(
        &[("PATH".into(), "/img".into()), ("A".into(), "1".into())],
        &[("PATH".into(), "/mine".into())],
    );
    assert_eq!(
        env,
        vec![("A".into(), "1".into()), ("PATH".into(), "/mine".into())]
    );
}

#[test]
fn unsafe_whiteouts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("shadow"), "secret").unwrap();
    // A layer with `x -> victim`, then `x/.wh.shadow`.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_link(&mut h, "x", &victim).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "x/.wh.shadow", std::io::empty())
        .unwrap();
    let layer = b.into_inner().unwrap();
    let dest = tmp.path().join("layer");
    let e = unpack_layer(
        &mut &layer[..],
        "application/vnd.oci.image.layer.v1.tar",
        &dest,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("symlink"), "{e:#}");
    assert_eq!(
        std::fs::read_to_string(victim.join("shadow")).unwrap(),
        "secret"
    );
    assert!(safe_join(Path::new("/x"), Path::new("../etc")).is_err());
    assert_eq!(
        safe_join(Path::new("/x"), Path::new("./a/b")).unwrap(),
        Path::new("/x/a/b")
    );
}
