//! Generates `tests/grpc/shop.rs` from `tests/grpc/inventory.proto` (and the gateway's
//! built-in `proto/google/api/*.proto`).

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let fds = protox::compile(
        [root.join("tests/grpc/inventory.proto")],
        [root.join("tests/grpc"), root.join("proto")],
    )
    .expect("inventory.proto compiles");
    tonic_prost_build::configure()
        .out_dir(root.join("tests/grpc"))
        .compile_fds(fds)
        .expect("code generated");
}
