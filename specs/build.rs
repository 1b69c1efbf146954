fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Every model can travel as JSON too (the receptor API reuses the
        // action, env, check and volume shapes as they are).
        .type_attribute(
            ".lattice.models",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .message_attribute(".lattice.models", "#[serde(default)]")
        // A oneof is one key naming its kind: {"run": {...}}.
        .enum_attribute(
            ".lattice.models.Action.action",
            "#[serde(rename_all = \"snake_case\")]",
        )
        .enum_attribute(
            ".lattice.models.Check.check",
            "#[serde(rename_all = \"snake_case\")]",
        )
        .message_attribute(".lattice.models.Action", "#[serde(transparent)]")
        .message_attribute(".lattice.models.Check", "#[serde(transparent)]")
        .compile_protos(
            &[
                "proto/models.proto",
                "proto/events.proto",
                "proto/bbs.proto",
                "proto/rep.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
