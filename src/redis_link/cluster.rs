//! A Redis deployment as one target: a single server (`redis://`, `rediss://`) or a Redis
//! Cluster (`redis+cluster://h1:p1,h2:p2`, `rediss+cluster://…`: the seed nodes, from which
//! redis-rs learns the slots and follows `MOVED`/`ASK` and failovers).

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

pub enum Target {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

/// A connection to either; cheap to clone (both multiplex one connection per node).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// `redis+cluster://[user:pass@]h1:p1,h2:p2[/]` → the seed nodes' URLs, each with the
/// credentials and the scheme (`redis` or `rediss`); `None` for a URL of one server.
pub fn seed_urls(url: &str) -> Option<Result<Vec<String>, String>> {
    let (scheme, rest) = match url.split_once("://")? {
        ("redis+cluster", rest) => ("redis", rest),
        ("rediss+cluster", rest) => ("rediss", rest),
        _ => return None,
    };
    let (creds, hosts) = match rest.rsplit_once('@') {
        Some((c, h)) => (format!("{c}@"), h),
        None => (String::new(), rest),
    };
    let hosts = hosts.trim_end_matches('/');
    let urls: Vec<String> = (hosts.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| format!("{scheme}://{creds}{h}"))
        .collect();
    Some(match urls.is_empty() {
        true => Err("names no node".to_string()),
        false => Ok(urls),
    })
}

impl Target {
    pub fn open(url: &str, timeout: Duration) -> Result<Target, redis::RedisError> {
        match seed_urls(url) {
            None => redis::Client::open(url).map(|c| Target::Single(Box::new(c))),
            Some(Err(why)) => Err(redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "a cluster URL",
                why,
            ))),
            Some(Ok(nodes)) => ClusterClient::builder(nodes)
                .connection_timeout(timeout.max(Duration::from_millis(200)))
                .response_timeout(timeout)
                .retries(1)
                .build()
                .map(|c| Target::Cluster(Box::new(c))),
        }
    }

    pub async fn connect(&self, timeout: Duration) -> redis::RedisResult<Conn> {
        match self {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config((**client).clone(), config)
                    .await
                    .map(Conn::Single)
            }
            Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// The nodes a `SCAN` must visit: the server itself, or each primary of the cluster
    /// (`CLUSTER NODES`; a SCAN sent to the cluster would see one node's keys).
    pub async fn scan_targets(&mut self) -> redis::RedisResult<Vec<Option<(String, u16)>>> {
        let Conn::Cluster(c) = self else {
            return Ok(vec![None]);
        };
        let nodes: String = redis::FromRedisValue::from_redis_value(
            c.route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await?,
        )?;
        Ok(primaries(&nodes).into_iter().map(Some).collect())
    }

    /// Deletes `names`: one UNLINK for all on a server; one each in a cluster, where a
    /// command's (and a pipeline's) keys must share a slot.
    pub async fn unlink(&mut self, names: &[String]) -> redis::RedisResult<u64> {
        match self {
            Conn::Single(c) => redis::cmd("UNLINK").arg(names).query_async(c).await,
            Conn::Cluster(c) => {
                let mut removed = 0;
                for name in names {
                    removed += redis::cmd("UNLINK").arg(name).query_async::<u64>(c).await?;
                }
                Ok(removed)
            }
        }
    }

    /// One `SCAN` step on `node` (`None`: the server of a single-server link).
    pub async fn scan_on(
        &mut self,
        node: &Option<(String, u16)>,
        cmd: Cmd,
    ) -> redis::RedisResult<(u64, Vec<String>)> {
        match (self, node) {
            (Conn::Cluster(c), Some((host, port))) => {
                let to = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                let v = c.route_command(cmd, RoutingInfo::SingleNode(to)).await?;
                Ok(redis::FromRedisValue::from_redis_value(v)?)
            }
            (conn, _) => cmd.query_async(conn).await,
        }
    }
}

/// The primaries' addresses in a `CLUSTER NODES` answer
/// (`<id> <host:port@cport[,hostname]> <flags> …`, flags holding `master`, not `fail`).
fn primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_, addr, flags) = (f.next()?, f.next()?, f.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        assert!(seed_urls("redis://h:1").is_none());
        assert_eq!(
            seed_urls("redis+cluster://:pw@h1:7000,h2:7001/").and_then(Result::ok),
            Some(vec![
                "redis://:pw@h1:7000".to_string(),
                "redis://:pw@h2:7001".to_string()
            ])
        );
        assert_eq!(
            seed_urls("rediss+cluster://h1:7000").and_then(Result::ok),
            Some(vec!["rediss://h1:7000".to_string()])
        );
        assert!(seed_urls("redis+cluster://").is_some_and(|r| r.is_err()));
    }

    #[test]
    fn primaries_are_read_from_cluster_nodes() {
        let nodes = "a 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n\
                     b 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922\n\
                     c 127.0.0.1:7002@17002 master,fail - 0 0 3 connected\n\
                     d 127.0.0.1:7003@17003 slave a 0 0 1 connected\n";
        assert_eq!(
            primaries(nodes),
            vec![
                ("127.0.0.1".to_string(), 7000),
                ("127.0.0.1".to_string(), 7001)
            ]
        );
    }
}
