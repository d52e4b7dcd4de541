//! Generates `tests/grpc/shop.rs` and `tests/grpc/inventory.pb` from `tests/grpc/inventory.proto` (and the gateway's
//! built-in `proto/google/api/*.proto`).

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..");
    let fds = protox::compile(
        [root.join("tests/grpc/inventory.proto")],
        [root.join("tests/grpc"), root.join("proto")],
    )
    .expect("inventory.proto compiles");
    // Encoded from the compiler's pool: `prost_types` options drop the `google.api.http`
    // extension, as a descriptor set from protoc keeps it.
    let set = protox::Compiler::new([root.join("tests/grpc"), root.join("proto")])
        .expect("include paths")
        .include_imports(true)
        .open_file(root.join("tests/grpc/inventory.proto"))
        .expect("inventory.proto compiles")
        .encode_file_descriptor_set();
    std::fs::write(root.join("tests/grpc/inventory.pb"), set).expect("inventory.pb written");
    tonic_prost_build::configure()
        .out_dir(root.join("tests/grpc"))
        .compile_fds(fds)
        .expect("code generated");
    // The annotations' own types are not used by the tests.
    let _ = std::fs::remove_file(root.join("tests/grpc/google.api.rs"));
}
