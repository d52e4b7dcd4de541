//! The console's files, built into the binary (no CDN, nothing built at run time). uPlot
//! (MIT, `assets/console/vendor/`) draws the charts.

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The content type and bytes of the file at `path`.
pub fn find(path: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match path {
        "/" | "/index.html" => (HTML, include_bytes!("../../assets/console/index.html")),
        "/console.js" => (JS, include_bytes!("../../assets/console/console.js")),
        "/console.css" => (CSS, include_bytes!("../../assets/console/console.css")),
        "/vendor/uPlot.iife.min.js" => (
            JS,
            include_bytes!("../../assets/console/vendor/uPlot.iife.min.js"),
        ),
        "/vendor/uPlot.min.css" => (
            CSS,
            include_bytes!("../../assets/console/vendor/uPlot.min.css"),
        ),
        _ => return None,
    })
}
