//! Generates the ONNX protobuf types from the official schema (`proto/onnx.proto`, taken
//! unchanged from the `onnx` 1.23.2 Python package) with `prost`. `protox` compiles the
//! schema in Rust, so no `protoc` binary is needed.

fn main() {
    let schema = "proto/onnx.proto";
    println!("cargo:rerun-if-changed={schema}");
    let descriptors = match protox::compile([schema], ["proto"]) {
        Ok(d) => d,
        Err(e) => panic!("cannot compile {schema}: {e}"),
    };
    if let Err(e) = prost_build::Config::new().compile_fds(descriptors) {
        panic!("cannot generate Rust types from {schema}: {e}");
    }
}
