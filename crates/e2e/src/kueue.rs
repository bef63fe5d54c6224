//! The real Kueue for the queued-batch scenarios (issue 13): built once by
//! `testenv/build-kueue.sh` (cached by version), started on first use and shared by
//! the scenarios of this test binary, against the test control plane.
//!
//! Kueue runs out of cluster, webhooks included:
//! - its CRDs and the ProvisioningRequest CRD are applied server-side (they are too
//!   big for a client-side apply's annotation);
//! - a throwaway CA signs a serving certificate for `127.0.0.1` (openssl); Kueue's
//!   internal certificate management is off and its webhook server reads that pair
//!   from its `certDir`, listening on 127.0.0.1 on a free port;
//! - Kueue's own webhook configurations (`config/components/webhook/manifests.yaml`
//!   of the module) are applied with each `clientConfig.service` replaced by
//!   `url: https://127.0.0.1:<port><path>` and the CA as `caBundle`, so the apiserver
//!   calls the process directly;
//! - with internal certificates off, Kueue v0.17 reads its metrics certificate from
//!   the fixed path `/etc/kueue/metrics/certs` (its metrics server is disabled here,
//!   but the file must exist): the same pair is written there.

use crate::gate::say;
use crate::paths;
use crate::process;
use crate::world::World;
use anyhow::{bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Where Kueue v0.17 reads its metrics certificate when its internal certificate
/// management is off (hard-coded in `cmd/kueue/main.go`).
const KUEUE_METRICS_CERT_DIR: &str = "/etc/kueue/metrics/certs";

/// A running Kueue.
#[derive(Debug)]
pub struct Kueue {
    pub dir: PathBuf,
    pub log: PathBuf,
    pub version: String,
}

static KUEUE: OnceLock<Result<Kueue, String>> = OnceLock::new();

impl Kueue {
    /// Kueue for this test binary, started on first use.
    pub fn get(world: &World) -> anyhow::Result<&'static Kueue> {
        match KUEUE.get_or_init(|| Kueue::start(world).map_err(|e| format!("{e:#}"))) {
            Ok(k) => Ok(k),
            Err(e) => bail!("Kueue could not be started: {e}"),
        }
    }

    /// The end of Kueue's log, for failure messages.
    pub fn log_tail(&self) -> String {
        process::tail(&self.log, 8_000)
    }

    fn start(world: &World) -> anyhow::Result<Kueue> {
        let started = Instant::now();
        let out = Command::new(paths::testenv().join("build-kueue.sh"))
            .stderr(Stdio::inherit())
            .output()
            .context("run testenv/build-kueue.sh")?;
        if !out.status.success() {
            bail!("testenv/build-kueue.sh failed ({})", out.status);
        }
        let env: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .with_context(|| format!("{k} from build-kueue.sh"))
        };
        let (bin, crds, webhooks, version) = (
            PathBuf::from(get("KUEUE_BIN")?),
            PathBuf::from(get("KUEUE_CRDS")?),
            PathBuf::from(get("KUEUE_WEBHOOKS")?),
            get("KUEUE_VERSION")?,
        );
        let dir = world.dir.join("kueue");
        std::fs::create_dir_all(&dir)?;

        world.kubectl_admin(
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                &crds.display().to_string(),
            ],
            "",
        )?;
        for crd in [
            "provisioningrequests.autoscaling.x-k8s.io",
            "workloads.kueue.x-k8s.io",
            "clusterqueues.kueue.x-k8s.io",
            "admissionchecks.kueue.x-k8s.io",
        ] {
            world.wait_crd_established(crd, Duration::from_secs(60))?;
        }
        world
            .kubectl_admin(&["create", "namespace", "kueue-system"], "")
            .or_else(|e| {
                if format!("{e}").contains("AlreadyExists") {
                    Ok(String::new())
                } else {
                    Err(e)
                }
            })?;

        let certs = dir.join("certs");
        let ca_bundle = make_certs(&certs)?;
        let metrics = Path::new(KUEUE_METRICS_CERT_DIR);
        std::fs::create_dir_all(metrics).with_context(|| {
            format!("create {KUEUE_METRICS_CERT_DIR} (Kueue reads its metrics certificate there)")
        })?;
        for f in ["tls.crt", "tls.key"] {
            std::fs::copy(certs.join(f), metrics.join(f))
                .with_context(|| format!("write {}", metrics.join(f).display()))?;
        }

        let port = process::free_port();
        let text = std::fs::read_to_string(&webhooks)?;
        world.kubectl_admin(
            &["apply", "-f", "-"],
            &webhook_configurations(&text, port, &ca_bundle)?,
        )?;

        let health = process::free_port();
        let config = dir.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "apiVersion: config.kueue.x-k8s.io/v1beta2\nkind: Configuration\nnamespace: kueue-system\n\
                 health:\n  healthProbeBindAddress: 127.0.0.1:{health}\nmetrics:\n  bindAddress: \"0\"\n\
                 webhook:\n  host: 127.0.0.1\n  port: {port}\n  certDir: {}\n\
                 leaderElection:\n  leaderElect: false\ninternalCertManagement:\n  enable: false\n\
                 integrations:\n  frameworks: [\"batch/job\"]\n\
                 featureGates:\n  VisibilityOnDemand: false\n",
                certs.display()
            ),
        )?;
        let log = dir.join("kueue.log");
        let child = Command::new(&bin)
            .arg(format!("--config={}", config.display()))
            .env("KUBECONFIG", &world.admin_kubeconfig)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("kueue.stdout.log"))?)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        process::register_pid(&world.dir, "kueue", child.id());
        let kueue = Kueue { dir, log, version };
        // Ready when its health endpoint says so (the webhook server is part of it).
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if ready(health) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "Kueue not ready within 120s; its log:\n{}",
                    kueue.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        say(&format!(
            "e2e: Kueue {} ready after {:.1}s (webhooks on 127.0.0.1:{port})",
            kueue.version,
            started.elapsed().as_secs_f64()
        ));
        Ok(kueue)
    }
}

/// Kueue's `/readyz` answers 200 (a blocking probe: the world is built outside any
/// tokio runtime).
fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200")
}

/// A CA and a serving pair for 127.0.0.1 in `dir` (`ca.crt`, `tls.crt`, `tls.key`);
/// returns the CA certificate base64-encoded, as a `caBundle`.
fn make_certs(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("run openssl")?;
        if !out.status.success() {
            bail!(
                "openssl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=e2e-kueue-ca",
    ])?;
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=127.0.0.1",
    ])?;
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n")?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ])?;
    let out = Command::new("openssl")
        .args(["base64", "-A", "-in", "ca.crt"])
        .current_dir(dir)
        .output()
        .context("openssl base64")?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Kueue's webhook configurations with every service reference turned into a URL on
/// 127.0.0.1 and the CA bundle set.
fn webhook_configurations(manifests: &str, port: u16, ca_bundle: &str) -> anyhow::Result<String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(manifests) {
        let mut v = serde_yaml::Value::deserialize(doc)?;
        if v.is_null() {
            continue;
        }
        let Some(hooks) = v.get_mut("webhooks").and_then(|w| w.as_sequence_mut()) else {
            continue;
        };
        for hook in hooks {
            let path = hook["clientConfig"]["service"]["path"]
                .as_str()
                .unwrap_or("/")
                .to_owned();
            let mut cc = serde_yaml::Mapping::new();
            cc.insert(
                "url".into(),
                format!("https://127.0.0.1:{port}{path}").into(),
            );
            cc.insert("caBundle".into(), ca_bundle.into());
            hook["clientConfig"] = serde_yaml::Value::Mapping(cc);
        }
        out.push(serde_yaml::to_string(&v)?);
    }
    if out.is_empty() {
        bail!("no webhook configurations in Kueue's manifests");
    }
    Ok(out.join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_references_become_urls_with_the_ca() {
        let m = "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata:\n  name: m\nwebhooks:\n- name: a\n  clientConfig:\n    service:\n      name: webhook-service\n      namespace: system\n      path: /mutate-batch-v1-job\n";
        let out = webhook_configurations(m, 9443, "Q0E=").unwrap();
        assert!(
            out.contains("url: https://127.0.0.1:9443/mutate-batch-v1-job"),
            "{out}"
        );
        assert!(out.contains("caBundle: Q0E="), "{out}");
        assert!(!out.contains("webhook-service"), "{out}");
    }
}
