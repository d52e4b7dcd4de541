//! `mock-backend [ADDR]` (default 127.0.0.1:3000): see the library docs for its endpoints.

use std::sync::Arc;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mock-backend: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("mock-backend listening on http://{addr}");
    if let Err(e) = mock_backend::serve(listener, Arc::default()).await {
        eprintln!("mock-backend: {e}");
        std::process::exit(1);
    }
}
