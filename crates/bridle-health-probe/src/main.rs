//! `bridle-health-probe`: asks a gRPC server whether it serves (`grpc.health.v1.Health/Check`)
//! and exits 0 when it answers SERVING, 1 otherwise. It exists for container health checks
//! (docker-compose `healthcheck`, or an exec probe on a Kubernetes older than 1.24's native
//! gRPC probes) in images that have no shell and no other client.
//!
//! It must never retry, wait longer than its timeout, or print anything but one line on
//! failure: the caller (the engine) owns the schedule.
//!
//!   bridle-health-probe [ADDR] [--service NAME] [--timeout SECONDS]
//!
//! ADDR is `host:port` or `http://host:port` (default `127.0.0.1:50051`, or
//! `BRIDLE_HEALTH_ADDR`); NAME is a fully qualified service (default: the whole server).

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

struct Args {
    addr: String,
    service: String,
    timeout: Duration,
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args {
        addr: std::env::var("BRIDLE_HEALTH_ADDR").unwrap_or_else(|_| "127.0.0.1:50051".into()),
        service: String::new(),
        timeout: Duration::from_secs(3),
    };
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--service" => args.service = argv.next().ok_or("--service needs a value")?,
            "--timeout" => {
                let v = argv.next().ok_or("--timeout needs a value")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--timeout: '{v}' is not a number of seconds"))?;
                if !(secs > 0.0 && secs <= 300.0) {
                    return Err(format!("--timeout: {secs} must be in (0, 300]"));
                }
                args.timeout = Duration::from_secs_f64(secs);
            }
            "-h" | "--help" => {
                return Err(
                    "usage: bridle-health-probe [ADDR] [--service NAME] [--timeout SECONDS]".into(),
                );
            }
            other if other.starts_with('-') => return Err(format!("unknown flag '{other}'")),
            other => args.addr = other.to_string(),
        }
    }
    if !args.addr.contains("://") {
        args.addr = format!("http://{}", args.addr);
    }
    Ok(args)
}

async fn check(args: &Args) -> Result<(), String> {
    let endpoint = tonic::transport::Endpoint::from_shared(args.addr.clone())
        .map_err(|e| format!("'{}' is not an address: {e}", args.addr))?
        .connect_timeout(args.timeout)
        .timeout(args.timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", args.addr))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|s| format!("{}: {:?}: {}", args.addr, s.code(), s.message()))?
        .into_inner();
    match ServingStatus::try_from(reply.status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(other) => Err(format!("{} reports {}", args.addr, other.as_str_name())),
        Err(_) => Err(format!(
            "{} reports unknown status {}",
            args.addr, reply.status
        )),
    }
}

fn main() -> ExitCode {
    let result = parse(std::env::args().skip(1)).and_then(|args| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the runtime: {e}"))?;
        // One overall bound on top of the per-call ones: a probe never outlives its timeout.
        rt.block_on(async {
            tokio::time::timeout(args.timeout + Duration::from_millis(500), check(&args))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "{}: no answer within {:?}",
                        args.addr, args.timeout
                    ))
                })
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Args, String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn addresses_get_a_scheme_and_flags_are_checked() {
        let a = p(&["orchestrator:50051", "--service", "bridle.v1.Orchestrator"]).unwrap();
        assert_eq!(a.addr, "http://orchestrator:50051");
        assert_eq!(a.service, "bridle.v1.Orchestrator");
        assert_eq!(
            p(&["https://x:1"]).map(|a| a.addr),
            Ok("https://x:1".to_string())
        );
        assert!(p(&["--timeout", "0"]).is_err());
        assert!(p(&["--timeout", "abc"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--service"]).is_err());
    }
}
