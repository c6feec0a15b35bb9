//! Generates the tonic/prost code for trace2e's services.
//!
//! Uses the `protoc` shipped by `protoc-bin-vendored`, so a fresh machine needs no system
//! protobuf compiler. `PROTOC` set in the environment still wins.

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
