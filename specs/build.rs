//! Generates the protobuf messages (always) and the internal gRPC services (with the
//! `grpc` feature) from `proto/`.

/// The messages every build has: the model and its events, and loggregator's
/// dropsonde envelopes (package `events`, what doppler's read side sends).
const MESSAGES: [&str; 6] = [
    "proto/models.proto",
    "proto/events.proto",
    "proto/dropsonde/envelope.proto",
    "proto/dropsonde/log.proto",
    "proto/dropsonde/metric.proto",
    "proto/dropsonde/error.proto",
];
/// The gRPC APIs (and their request and response messages), with the `grpc` feature.
#[cfg(feature = "grpc")]
const SERVICES: [&str; 2] = ["proto/bbs.proto", "proto/rep.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut config = prost_build::Config::new();
    // Every model can travel as JSON too (the receptor API reuses the
    // action, env, check and volume shapes as they are).
    config
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
        .message_attribute(".lattice.models.Check", "#[serde(transparent)]");
    #[cfg(feature = "grpc")]
    {
        let protos: Vec<&str> = MESSAGES.iter().chain(&SERVICES).copied().collect();
        tonic_prost_build::configure()
            .build_server(true)
            .build_client(true)
            .compile_with_config(config, &protos, &["proto"])?;
    }
    #[cfg(not(feature = "grpc"))]
    {
        // As tonic's generator does, so both builds generate the same messages.
        config.type_attribute(".", "#[allow(clippy::all)]");
        config.compile_protos(&MESSAGES, &["proto"])?;
    }
    Ok(())
}
