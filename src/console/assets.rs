//! The console's files, built into the binary (no CDN, nothing built at run time).

/// The content type and bytes of the file at `path`.
pub fn find(path: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            include_bytes!("../../assets/console/index.html"),
        ),
        "/console.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../../assets/console/console.js"),
        ),
        "/console.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../../assets/console/console.css"),
        ),
        _ => return None,
    })
}
