//! `reachline serve`: the API, webhooks, docs and metrics on `[server] listen`, and on the same
//! node the notice engine's passes on the real clock (as `reachline run`) when a channel is
//! configured. `reachline token …`: API tokens from the command line (the first admin token
//! has to come from here).

use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use reachline_server::auth::{new_token, Role};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Listen here instead of `[server] listen` (e.g. 127.0.0.1:0 for any free port).
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve the API and webhooks only; another node runs the engine's passes.
    #[arg(long)]
    pub no_engine: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum OperatorCommand {
    /// Create an operator who logs in to the dashboard, or set an existing one's role and
    /// password. The password is read from REACHLINE_OPERATOR_PASSWORD, else from the first
    /// line of standard input; at least 12 characters.
    Add {
        #[arg(long)]
        login: String,
        /// admin, operator or auditor.
        #[arg(long)]
        role: String,
    },
}

pub async fn operator(cfg: &Config, command: OperatorCommand) -> anyhow::Result<()> {
    let OperatorCommand::Add { login, role } = command;
    let role = Role::parse(&role)
        .filter(|r| *r != Role::Integration)
        .with_context(|| format!("--role must be admin, operator or auditor (got {role:?})"))?;
    anyhow::ensure!(
        !login.is_empty()
            && login.len() <= 64
            && login.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
        "--login must be 1 to 64 letters, digits, '.', '_' or '-'"
    );
    let password = match std::env::var("REACHLINE_OPERATOR_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    anyhow::ensure!(
        password.chars().count() >= 12,
        "the password must have at least 12 characters"
    );
    let stores = reachline_store::open_all(cfg.database.url.as_str(), cfg.keyring()?)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
    stores
        .server
        .put_operator(&reachline_store::server::OperatorRecord {
            login: login.clone(),
            role: role.as_str().to_string(),
            hash: reachline_server::auth::hash_secret(&password, &mut rand::rngs::OsRng),
            created_at: Utc::now(),
            disabled_at: None,
        })
        .await?;
    println!("operator {login} ({}) can log in to the dashboard", role.as_str());
    Ok(())
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (only its hash is kept).
    Create {
        /// admin, operator, auditor or integration.
        #[arg(long)]
        role: String,
        /// Who holds it (a system or a team, not a person's name).
        #[arg(long)]
        name: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by its id.
    Revoke { id: String },
}

pub async fn token(cfg: &Config, command: TokenCommand) -> anyhow::Result<()> {
    let stores = reachline_store::open_all(cfg.database.url.as_str(), cfg.keyring()?)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
    match command {
        TokenCommand::Create { role, name } => {
            let role = Role::parse(&role)
                .with_context(|| format!("--role must be admin, operator, auditor or integration (got {role:?})"))?;
            let t = new_token(&name, role, Utc::now(), &mut rand::rngs::OsRng);
            stores.server.create_token(&t.record).await?;
            eprintln!("token {} ({}) created; it is shown once:", t.record.id, role.as_str());
            println!("{}", t.token);
        }
        TokenCommand::List => {
            for t in stores.server.tokens().await? {
                let state = match t.revoked_at {
                    Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                    None => "live".into(),
                };
                println!(
                    "{}  {:<11}  {:<24}  created {}  {}",
                    t.id,
                    t.role,
                    t.name,
                    t.created_at.format("%Y-%m-%d %H:%M"),
                    state
                );
            }
        }
        TokenCommand::Revoke { id } => {
            anyhow::ensure!(stores.server.revoke_token(&id, Utc::now()).await?, "no live token {id}");
            println!("token {id} revoked");
        }
    }
    Ok(())
}

pub async fn serve(cfg: &Config, args: ServeArgs) -> anyhow::Result<()> {
    let stores = reachline_store::open_all(cfg.database.url.as_str(), cfg.keyring()?)
        .await
        .with_context(|| format!("opening database {}", cfg.database.url.redacted()))?;
    let channels = if args.no_engine {
        Vec::new()
    } else {
        crate::run::channels(cfg).await
    };
    let passes = !channels.is_empty();
    let tls = match (&cfg.server.tls_cert, &cfg.server.tls_key) {
        (Some(cert), Some(key)) => Some(reachline_server::tls::server_config(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("[server] tls_cert and tls_key go together: set both or neither"),
    };
    let (engine, sink) = crate::run::build_engine(cfg, stores.engine.clone(), channels).await?;
    let clock: reachline_server::Clock = Arc::new(Utc::now);
    engine.use_clock(clock.clone());
    engine.spawn_intake(clock.clone());
    let server = reachline_server::Server::new(
        stores,
        engine.clone(),
        Some(sink.store.clone()),
        cfg.server.clone(),
        clock,
        cfg.book_defaults()?,
        cfg.phone_parser()?,
    );
    if let Ok(signer) = cfg.ledger_signer() {
        server.set_ledger_key(signer.verifier());
    }
    let _ = server.privacy.set(cfg.privacy());
    if let Some(intel) = engine.intel() {
        let _ = server.intel.set(intel.clone());
    }
    match cfg.server.self_service.identity.as_str() {
        "none" => {}
        "sandbox" => {
            tracing::warn!("the sandbox identity provider confirms every number: for trials only");
            let _ = server
                .identity
                .set(Arc::new(reachline_server::identity::SandboxIdentity::default()));
        }
        other => anyhow::bail!("[server.self_service] identity = {other:?}: expected \"none\" or \"sandbox\""),
    }
    let listen = args.listen.as_deref().unwrap_or(&cfg.server.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    if passes {
        let tick = std::time::Duration::from_secs(cfg.engine.tick_seconds);
        tokio::spawn(async move {
            loop {
                match engine.step(Utc::now()).await {
                    Ok((p, d)) => tracing::info!(
                        borrowers = p.borrowers,
                        queued = p.queued,
                        sent = d.sent,
                        failed = d.failed,
                        cancelled = d.cancelled,
                        "pass"
                    ),
                    Err(e) => tracing::error!(error = %e, "engine pass failed; next pass in one tick"),
                }
                tokio::time::sleep(tick).await;
            }
        });
    } else {
        tracing::info!("no channel on this node: the engine does not plan or send here; API and webhooks are served");
    }
    let app = reachline_server::router(server);
    let scheme = if tls.is_some() { "https" } else { "http" };
    // The one line a script waits for.
    println!(
        "reachline serving on {scheme}://{addr} (dashboard: {scheme}://{addr}/, API docs: {scheme}://{addr}/docs)"
    );
    match tls {
        Some(config) => {
            reachline_server::serve_tls(reachline_server::tls::TlsListener::new(listener, config)?, app).await?
        }
        None => reachline_server::serve(listener, app).await?,
    }
    Ok(())
}
