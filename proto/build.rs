//! Generates the tonic/prost code for trace2e's services, only with the `grpc` feature.
//!
//! Uses the `protoc` shipped by `protoc-bin-vendored`, so a fresh machine needs no system
//! protobuf compiler. `PROTOC` set in the environment still wins.
//!
//! The code generators are optional build-dependencies of the `grpc` feature, so the
//! script names them under `cfg(feature = "grpc")` (Cargo compiles build scripts with the
//! package's features, the same switch it exports as `CARGO_FEATURE_GRPC`). Without the
//! feature nothing is generated and `src/lib.rs` does not include the generated code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "grpc")]
    generate()?;
    Ok(())
}

#[cfg(feature = "grpc")]
fn generate() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        let protoc = protoc_bin_vendored::protoc_bin_path()?;
        // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
        unsafe { std::env::set_var("PROTOC", protoc) };
    }
    let protos = ["proto/p2m.proto", "proto/o2m.proto", "proto/m2m.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure().build_server(true).build_client(true).compile_protos(&protos, &["proto"])?;
    Ok(())
}
