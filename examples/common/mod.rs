//! What the examples share: choosing a Redis to talk to.

use stayfast::{
    settings::{RedisUrl, Settings},
    test_util::RedisServer,
};

/// Points `settings` at `REDIS_URL` when set; otherwise at a throwaway redis-server on a
/// free loopback port when one is installed (returned: it stops when dropped);
/// otherwise turns Redis off (file-only) and says so.
pub(crate) async fn choose_redis(settings: &mut Settings) -> Option<RedisServer> {
    if let Ok(url) = std::env::var("REDIS_URL") {
        println!("Redis: REDIS_URL");
        settings.redis.url = RedisUrl::new(url);
        return None;
    }
    match RedisServer::start().await {
        Ok(server) => {
            println!("Redis: a throwaway redis-server at {}", server.url());
            settings.redis.url = RedisUrl::new(server.url());
            Some(server)
        }
        Err(e) => {
            println!("Redis: none ({e})");
            println!("       running file-only: transcripts work; facts and the cache need Redis.");
            settings.redis.enabled = false;
            None
        }
    }
}

/// The exit status for an example's result, printing the error with `Display` (what a
/// newcomer should read) rather than `Debug`.
pub(crate) fn exit_code(result: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
