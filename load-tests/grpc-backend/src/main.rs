//! `grpc-backend [ADDR]` (default 127.0.0.1:50051): `shop.Inventory` over h2c for the
//! transcoding benchmark. `Restock` and `GetItem` answer at once; the other methods are
//! UNIMPLEMENTED. Prints `ready <port>` once listening.

#[allow(clippy::all, dead_code)]
mod shop {
    include!("../../../tests/grpc/shop.rs");
}

use shop::inventory_server::{Inventory, InventoryServer};
use shop::*;
use tonic::{Request, Response, Status};

struct Shop;

#[tonic::async_trait]
impl Inventory for Shop {
    async fn get_item(&self, r: Request<GetItemRequest>) -> Result<Response<Item>, Status> {
        let q = r.into_inner();
        Ok(Response::new(Item {
            id: q.item_id,
            shelf: q.shelf,
            count: 9_007_199_254_740_993,
            kind: Kind::Book as i32,
            ..Default::default()
        }))
    }

    async fn create_item(&self, _: Request<CreateItemRequest>) -> Result<Response<Item>, Status> {
        Err(Status::unimplemented("not in the benchmark"))
    }

    async fn update_item(&self, _: Request<UpdateItemRequest>) -> Result<Response<Item>, Status> {
        Err(Status::unimplemented("not in the benchmark"))
    }

    type ListItemsStream = tokio_stream::wrappers::ReceiverStream<Result<Item, Status>>;

    async fn list_items(
        &self,
        _: Request<ListItemsRequest>,
    ) -> Result<Response<Self::ListItemsStream>, Status> {
        Err(Status::unimplemented("not in the benchmark"))
    }

    async fn restock(&self, r: Request<RestockRequest>) -> Result<Response<Item>, Status> {
        let q = r.into_inner();
        Ok(Response::new(Item {
            id: q.id,
            count: q.add + 1,
            ..Default::default()
        }))
    }

    async fn slow(&self, _: Request<SlowRequest>) -> Result<Response<Item>, Status> {
        Err(Status::unimplemented("not in the benchmark"))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("grpc-backend: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    println!("ready {port}");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let served = tonic::transport::Server::builder()
        .add_service(InventoryServer::new(Shop))
        .serve_with_incoming(incoming)
        .await;
    if let Err(e) = served {
        eprintln!("grpc-backend: {e}");
        std::process::exit(1);
    }
}
