//! An HTTP cache in front (a CDN, or Varnish): how long it may keep item and list answers, and
//! where the purges that keep it coherent go.

use std::time::Duration;

use clap::Args;

/// The edge cache (`--edge-*`): off unless `--edge-max-age` is set.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Edge cache")]
pub struct EdgeSettings {
    /// How long a shared cache in front (Varnish, Fastly, Cloudflare) may keep `GET /data/{id}`
    /// and `GET /data` answers (`Surrogate-Control` and `CDN-Cache-Control: max-age`; browsers'
    /// `Cache-Control` is unchanged). Whole seconds, 1s to 1 day. Every committed change is
    /// purged by surrogate key; while purges fail this is how stale the edge can be. Off when
    /// unset. Needs `--edge-purge-url` and the cache. Env: DATA_API_EDGE_MAX_AGE.
    #[arg(long, env = "DATA_API_EDGE_MAX_AGE", value_parser = max_age)]
    pub edge_max_age: Option<Duration>,

    /// Where purges go: Varnish's address (`http://varnish:6081/`, the shipped VCL's `PURGE`
    /// with `xkey-purge`) or a hosted CDN's purge-by-tag endpoint. Env: DATA_API_EDGE_PURGE_URL.
    #[arg(long, env = "DATA_API_EDGE_PURGE_URL", hide_env_values = true)]
    pub edge_purge_url: Option<String>,

    /// The purge endpoint's API: `varnish` (`PURGE` with an `xkey-purge` header) or `tags` (a
    /// hosted CDN's `POST {"tags": [...]}` with `Authorization: Bearer <token>`, as Cloudflare's
    /// purge by Cache-Tag). Env: DATA_API_EDGE_PURGE_API.
    #[arg(long, env = "DATA_API_EDGE_PURGE_API", value_enum, default_value_t = PurgeApi::Varnish)]
    pub edge_purge_api: PurgeApi,

    /// The bearer token of the `tags` purge API. Env: DATA_API_EDGE_PURGE_TOKEN.
    #[arg(long, env = "DATA_API_EDGE_PURGE_TOKEN", hide_env_values = true, value_parser = super::secret)]
    pub edge_purge_token: Option<String>,

    /// Longest a write waits for its purge before it is acknowledged anyway (counted, and the
    /// edge stops being told answers are cacheable until purges work again).
    /// Env: DATA_API_EDGE_PURGE_TIMEOUT.
    #[arg(long, env = "DATA_API_EDGE_PURGE_TIMEOUT", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub edge_purge_timeout: Duration,
}

/// How purges are sent (`--edge-purge-api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PurgeApi {
    /// `PURGE` with the keys in `xkey-purge` (the shipped `varnish/data-api.vcl`).
    Varnish,
    /// `POST` of `{"tags": [...]}` with a bearer token.
    Tags,
}

/// Longest `--edge-max-age`: a day.
const LONGEST: Duration = Duration::from_secs(86_400);

fn max_age(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if d.subsec_nanos() != 0 || d < Duration::from_secs(1) || d > LONGEST {
        return Err("must be whole seconds, from 1s to 1d".into());
    }
    Ok(d)
}

impl EdgeSettings {
    /// Whether the settings make sense together: a max age without a purge URL (or the `tags`
    /// API without a token) would let the edge go stale with nobody purging it.
    pub fn check(&self) -> Result<(), String> {
        if self.edge_max_age.is_none() {
            return Ok(());
        }
        let Some(url) = &self.edge_purge_url else {
            return Err(
                "--edge-max-age needs --edge-purge-url: without purges the edge would \
                        answer older versions after writes"
                    .into(),
            );
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--edge-purge-url must be an http(s) URL, not {url:?}"
            ));
        }
        if self.edge_purge_api == PurgeApi::Tags && self.edge_purge_token.is_none() {
            return Err("--edge-purge-api tags needs --edge-purge-token".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<EdgeSettings, clap::Error> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            edge: EdgeSettings,
        }
        let argv = std::iter::once("t").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).map(|c| c.edge)
    }

    #[test]
    fn max_ages_are_whole_seconds_within_a_day() {
        for bad in ["0s", "1500ms", "2d", "soon", ""] {
            assert!(parsed(&["--edge-max-age", bad]).is_err(), "{bad}");
        }
        let ok = parsed(&["--edge-max-age", "60s"]).expect("parses");
        assert_eq!(ok.edge_max_age, Some(Duration::from_secs(60)));
    }

    #[test]
    fn an_edge_without_purges_is_refused() {
        let no_url = parsed(&["--edge-max-age", "60s"]).expect("parses");
        assert!(no_url.check().unwrap_err().contains("--edge-purge-url"));
        let not_http =
            parsed(&["--edge-max-age", "1s", "--edge-purge-url", "varnish:6081"]).expect("parses");
        assert!(not_http.check().is_err());
        let tags_without_token = parsed(&[
            "--edge-max-age",
            "1s",
            "--edge-purge-url",
            "https://cdn.example/purge",
            "--edge-purge-api",
            "tags",
        ])
        .expect("parses");
        assert!(tags_without_token.check().unwrap_err().contains("token"));
        assert!(parsed(&["--edge-purge-token", " "]).is_err(), "blank token");
        let off = parsed(&[]).expect("parses");
        assert!(off.check().is_ok() && off.edge_max_age.is_none());
    }
}
