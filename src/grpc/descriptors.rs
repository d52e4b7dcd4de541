//! A route's descriptors: a `FileDescriptorSet` read from a file, or `.proto` files compiled
//! with `protox` (no `protoc` at run time). `google/api/annotations.proto` and `http.proto`
//! are built in, so annotated protos compile without googleapis at hand.

use crate::config::schema::GrpcTranscode;
use prost_reflect::DescriptorPool;
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};
use std::path::{Path, PathBuf};

/// The pool, or the configuration field at fault and what is wrong.
pub fn load(g: &GrpcTranscode, dir: &Path) -> Result<DescriptorPool, (&'static str, String)> {
    match (&g.descriptor_set, &g.protos) {
        (Some(set), None) => {
            let path = dir.join(&set.0);
            let bytes = std::fs::read(&path)
                .map_err(|e| ("descriptor_set", format!("{}: {e}", path.display())))?;
            DescriptorPool::decode(bytes.as_slice()).map_err(|e| {
                let what = format!("{}: not a loadable descriptor set: {e}", path.display());
                ("descriptor_set", what)
            })
        }
        (None, Some(protos)) if !protos.is_empty() => {
            compile(protos.iter().map(|p| dir.join(&p.0)), g, dir).map_err(|e| ("protos", e))
        }
        (Some(_), Some(_)) => Err(("protos", "give descriptor_set or protos, not both".into())),
        _ => Err(("descriptor_set", "give descriptor_set or protos".into())),
    }
}

fn compile(
    protos: impl Iterator<Item = PathBuf>,
    g: &GrpcTranscode,
    dir: &Path,
) -> Result<DescriptorPool, String> {
    let protos: Vec<PathBuf> = protos.collect();
    // The include paths as given, else each file's own folder.
    let includes: Vec<PathBuf> = match &g.include_paths {
        Some(paths) => paths.iter().map(|p| dir.join(&p.0)).collect(),
        None => protos
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect(),
    };
    let mut chain = ChainFileResolver::new();
    for i in includes {
        chain.add(IncludeFileResolver::new(i));
    }
    chain.add(GoogleApi);
    chain.add(GoogleFileResolver::new());
    let mut c = protox::Compiler::with_file_resolver(chain);
    c.include_imports(true);
    for p in &protos {
        c.open_file(p).map_err(|e| describe(&e))?;
    }
    Ok(c.descriptor_pool())
}

/// protox's error, with its file (and line and column) when it names them.
fn describe(e: &protox::Error) -> String {
    use miette::Diagnostic;
    let place = (e.labels().and_then(|mut l| l.next()))
        .zip(e.source_code())
        .and_then(|(label, src)| src.read_span(label.inner(), 0, 0).ok())
        .map(|s| format!(":{}:{}", s.line() + 1, s.column() + 1));
    match e.file() {
        Some(f) => format!("{f}{}: {e}", place.unwrap_or_default()),
        None => e.to_string(),
    }
}

/// The built-in `google/api/*.proto`.
struct GoogleApi;

impl FileResolver for GoogleApi {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        let source = match name {
            "google/api/http.proto" => include_str!("../../proto/google/api/http.proto"),
            "google/api/annotations.proto" => {
                include_str!("../../proto/google/api/annotations.proto")
            }
            _ => return Err(protox::Error::file_not_found(name)),
        };
        File::from_source(name, source)
    }
}
