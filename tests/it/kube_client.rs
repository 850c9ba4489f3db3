//! The in-process EKS token (structure as aws-iam-authenticator verifies it, and
//! its SigV4 signature recomputed independently) and `kube::Connector` against the
//! real kube-apiserver bed, both through a kubeconfig and through endpoint + CA.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_s3::config::Credentials;
use base64::Engine as _;
use clap::Parser as _;
use karpctl::kube::token::{presigned_url, token_at, TOKEN_PREFIX};
use karpctl::kube::{client_for_cluster, ClusterAccess, Connector};
use sha2::{Digest, Sha256};

use crate::beds::KubeBed;

/// 2026-01-02T03:04:05Z
fn fixed_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_323_045)
}

fn creds(session: Option<&str>) -> Credentials {
    Credentials::new("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", session.map(str::to_string), None, "test")
}

struct Url {
    scheme: String,
    host: String,
    path: String,
    query: Vec<(String, String)>,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8().unwrap().into_owned()
}

fn parse_url(url: &str) -> Url {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (authority, rest) = rest.split_at(rest.find('/').unwrap());
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let query = query
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (decode(k), decode(v))
        })
        .collect();
    Url { scheme: scheme.into(), host: authority.into(), path: path.into(), query }
}

/// The URL inside a token, checking the prefix and the unpadded base64url.
fn url_of(token: &str) -> String {
    let b64 = token.strip_prefix(TOKEN_PREFIX).expect("token starts with k8s-aws-v1.");
    assert!(!b64.contains('='), "no padding: {b64}");
    assert!(!b64.contains('+') && !b64.contains('/'), "base64url alphabet: {b64}");
    String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(b64).expect("base64url")).unwrap()
}

fn params(u: &Url) -> BTreeMap<String, String> {
    let m: BTreeMap<String, String> = u.query.iter().cloned().collect();
    assert_eq!(m.len(), u.query.len(), "no repeated parameters: {:?}", u.query);
    m
}

#[test]
fn the_token_has_the_shape_aws_iam_authenticator_verifies() {
    for session in [None, Some("FQoGZXIvYXdzEXAMPLE//+token=")] {
        let t = token_at(&creds(session), "eu-central-1", "prod-a", fixed_time()).unwrap();
        assert!(t.token.len() < 4096, "token under 4 KiB: {}", t.token.len());
        assert_eq!(t.expires_at, fixed_time() + Duration::from_secs(14 * 60));
        let u = parse_url(&url_of(&t.token));
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "sts.eu-central-1.amazonaws.com");
        assert_eq!(u.path, "/");
        let p = params(&u);
        let mut allowed = vec![
            "Action",
            "Version",
            "X-Amz-Algorithm",
            "X-Amz-Credential",
            "X-Amz-Date",
            "X-Amz-Expires",
            "X-Amz-Signature",
            "X-Amz-SignedHeaders",
        ];
        if session.is_some() {
            allowed.push("X-Amz-Security-Token");
        }
        allowed.sort_unstable();
        assert_eq!(p.keys().map(String::as_str).collect::<Vec<_>>(), allowed);
        assert_eq!(p["Action"], "GetCallerIdentity");
        assert_eq!(p["Version"], "2011-06-15");
        assert_eq!(p["X-Amz-Expires"], "60");
        assert_eq!(p["X-Amz-Algorithm"], "AWS4-HMAC-SHA256");
        assert_eq!(p["X-Amz-Date"], "20260102T030405Z");
        assert_eq!(p["X-Amz-Credential"], "AKIDEXAMPLE/20260102/eu-central-1/sts/aws4_request");
        let signed: Vec<&str> = p["X-Amz-SignedHeaders"].split(';').collect();
        assert!(signed.contains(&"host") && signed.contains(&"x-k8s-aws-id"), "{signed:?}");
        if let Some(s) = session {
            assert_eq!(p["X-Amz-Security-Token"], s);
        }
    }
}

#[test]
fn the_cluster_name_is_signed_and_the_token_is_deterministic() {
    let sig = |cluster: &str| params(&parse_url(&presigned_url(&creds(None), "us-west-2", cluster, fixed_time()).unwrap()))["X-Amz-Signature"].clone();
    assert_eq!(sig("a"), sig("a"));
    assert_ne!(sig("a"), sig("b"), "the signature must cover x-k8s-aws-id");
    let at = |t| token_at(&creds(None), "us-west-2", "a", t).unwrap().token;
    assert_ne!(at(fixed_time()), at(fixed_time() + Duration::from_secs(1)));
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn uri_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The SigV4 query-string signature recomputed from the canonical request
/// (AWS "Create a signed AWS API request"), not through aws-sigv4.
#[test]
fn the_signature_matches_an_independent_sigv4_computation() {
    let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    for session in [None, Some("session/token+with=odd chars")] {
        let url = presigned_url(&creds(session), "ap-southeast-2", "my-cluster", fixed_time()).unwrap();
        let p = params(&parse_url(&url));
        assert_eq!(p["X-Amz-SignedHeaders"], "host;x-k8s-aws-id");
        let query: Vec<String> = p.iter().filter(|(k, _)| *k != "X-Amz-Signature").map(|(k, v)| format!("{}={}", uri_encode(k), uri_encode(v))).collect();
        let creq = format!(
            "GET\n/\n{}\nhost:sts.ap-southeast-2.amazonaws.com\nx-k8s-aws-id:my-cluster\n\nhost;x-k8s-aws-id\n{}",
            query.join("&"),
            hex(&Sha256::digest(b""))
        );
        let sts = format!("AWS4-HMAC-SHA256\n20260102T030405Z\n20260102/ap-southeast-2/sts/aws4_request\n{}", hex(&Sha256::digest(creq.as_bytes())));
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), b"20260102");
        for part in ["ap-southeast-2", "sts", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        assert_eq!(p["X-Amz-Signature"], hex(&hmac(&key, sts.as_bytes())), "canonical request:\n{creq}");
    }
}

#[test]
fn hmac_helper_matches_rfc_4231_case_2() {
    assert_eq!(hex(&hmac(b"Jefe", b"what do ya want for nothing?")), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

fn global(args: &[&str]) -> karpctl::cli::Global {
    let mut argv = vec!["karpctl"];
    argv.extend_from_slice(args);
    argv.push("status");
    karpctl::cli::Cli::parse_from(argv).global
}

#[tokio::test]
async fn without_a_kubeconfig_or_an_endpoint_the_error_says_what_is_missing() {
    let g = global(&[]);
    let conn = || Connector::new(&g.kube(), aws_config::SdkConfig::builder().build(), "c");
    let Err(e) = conn().client(None).await else { panic!("a client without cluster facts") };
    assert!(format!("{e:#}").contains("the cluster facts are unknown"), "{e:#}");
    let facts = serde_json::json!({"endpoint": "", "certificateAuthority": ""});
    let Err(e) = conn().client(Some(&facts)).await else { panic!("a client without an endpoint") };
    assert!(format!("{e:#}").contains("EKS reports no endpoint or certificate authority for cluster `c`; pass --kubeconfig"), "{e:#}");
}

#[test]
fn a_bad_ca_or_endpoint_is_named() {
    let access = |endpoint: &str, ca: &str| ClusterAccess { endpoint: endpoint.into(), ca_base64: ca.into(), cluster_name: "c".into(), region: "us-west-2".into() };
    let e = karpctl::kube::config_with_token(&access("https://x.example", "not base64!"), "t").unwrap_err();
    assert!(format!("{e:#}").contains("certificate authority of cluster `c`"), "{e:#}");
    let pem = base64::engine::general_purpose::STANDARD.encode("no certificate here");
    let e = karpctl::kube::config_with_token(&access("https://x.example", &pem), "t").unwrap_err();
    assert!(format!("{e:#}").contains("holds no certificate"), "{e:#}");
    let e = karpctl::kube::config_with_token(&access("http://x.example", &pem), "t").unwrap_err();
    assert!(format!("{e:#}").contains("not https"), "{e:#}");
}

#[tokio::test]
async fn a_kubeconfig_from_the_flags_reaches_the_bed() {
    use k8s_openapi::api::core::v1::Namespace;
    let Some(bed) = KubeBed::start() else { return };
    let g = global(&["--kubeconfig", bed.kubeconfig().to_str().unwrap()]);
    let c = Connector::new(&g.kube(), aws_config::SdkConfig::builder().build(), "c").client(None).await.expect("client from kubeconfig");
    let ns = kube::Api::<Namespace>::all(c).list(&Default::default()).await.expect("list namespaces");
    assert!(ns.items.iter().any(|n| n.metadata.name.as_deref() == Some("default")), "{:?}", ns.items.len());
}

#[tokio::test]
async fn endpoint_and_ca_reach_the_bed_over_verified_tls_and_the_eks_token_is_refused() {
    use k8s_openapi::api::core::v1::Namespace;
    let Some(bed) = KubeBed::start() else { return };
    let kc = kube::config::Kubeconfig::read_from(bed.kubeconfig()).unwrap();
    let cluster = kc.clusters[0].cluster.as_ref().unwrap();
    let access = ClusterAccess {
        endpoint: cluster.server.clone().unwrap(),
        ca_base64: cluster.certificate_authority_data.clone().expect("the bed's kubeconfig embeds its CA"),
        cluster_name: "bed".into(),
        region: "us-west-2".into(),
    };
    let sdk = aws_config::SdkConfig::builder()
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(creds(Some("session"))))
        .build();
    let c = client_for_cluster(&sdk, &access).await.expect("client from endpoint + CA");
    let err = kube::Api::<Namespace>::all(c).list(&Default::default()).await.expect_err("the static-token bed cannot accept an EKS token");
    match err {
        // A 401 Status means TLS verified against the given CA, the request
        // arrived, and it carried a bearer token the server looked up and refused.
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (401, "Unauthorized"), "{s:?}"),
        other => panic!("expected 401 Unauthorized from the server, got a transport error: {other:?}"),
    }

    // The same endpoint with a CA that did not sign the server fails in TLS, so the pass above is meaningful.
    let dir = std::env::temp_dir().join(format!("karpctl-kube-client-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, crt) = (dir.join("k.pem"), dir.join("c.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=not-the-bed-ca", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl (the kube bed needs it too)");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let wrong = ClusterAccess { ca_base64: base64::engine::general_purpose::STANDARD.encode(std::fs::read(&crt).unwrap()), ..access };
    let c = karpctl::kube::client_with_token(&wrong, "k8s-aws-v1.x").unwrap();
    let err = kube::Api::<Namespace>::all(c).list(&Default::default()).await.expect_err("an unknown CA must fail");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!matches!(err, kube::Error::Api(_)), "expected a TLS failure, got an API answer: {err:?}");
}

// ---------------------------------------------------------------------------------------
// Token refresh (karpctl::kube::auth) against the bed: its static admin token stands in
// for a freshly minted EKS token, anything else is refused with 401 like an expired one.

mod refresh {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use futures::future::BoxFuture;
    use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
    use karpctl::kube::auth::{TokenSource, REFRESH_AFTER};
    use karpctl::kube::{client_with_source, ClusterAccess};
    use kube::api::{Api, PostParams};

    use crate::beds::KubeBed;

    /// Hands out `tokens` in order (the last one for ever after), `Err` as a failed
    /// mint, each after `delay`, and counts the mints (at their start, so mints that
    /// overlap are all counted).
    struct Scripted {
        tokens: Vec<Result<String, String>>,
        delay: Duration,
        mints: AtomicUsize,
    }

    impl Scripted {
        fn new(tokens: Vec<Result<String, String>>, delay: Duration) -> Arc<Scripted> {
            Arc::new(Scripted { tokens, delay, mints: AtomicUsize::new(0) })
        }

        fn mints(&self) -> usize {
            self.mints.load(Ordering::SeqCst)
        }
    }

    impl TokenSource for Scripted {
        fn mint(&self) -> BoxFuture<'_, anyhow::Result<String>> {
            Box::pin(async move {
                let n = self.mints.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(self.delay).await;
                match &self.tokens[n.min(self.tokens.len() - 1)] {
                    Ok(t) => Ok(t.clone()),
                    Err(e) => Err(anyhow::anyhow!("{e}")),
                }
            })
        }
    }

    /// Endpoint + CA of the bed (from its kubeconfig) and its admin token (from handle.json).
    fn bed_access(bed: &KubeBed) -> (ClusterAccess, String) {
        let kc = kube::config::Kubeconfig::read_from(bed.kubeconfig()).unwrap();
        let cluster = kc.clusters[0].cluster.as_ref().unwrap();
        let access = ClusterAccess {
            endpoint: cluster.server.clone().unwrap(),
            ca_base64: cluster.certificate_authority_data.clone().expect("the bed's kubeconfig embeds its CA"),
            cluster_name: "bed".into(),
            region: "us-west-2".into(),
        };
        let handle: serde_json::Value = serde_json::from_slice(&std::fs::read(bed.dir.join("handle.json")).expect("the bed's handle.json")).unwrap();
        let token = handle["admin_token"].as_str().expect("handle.json has admin_token").to_string();
        (access, token)
    }

    async fn list(c: &kube::Client) -> Result<usize, kube::Error> {
        Ok(Api::<Namespace>::all(c.clone()).list(&Default::default()).await?.items.len())
    }

    fn is_401(e: &kube::Error) -> bool {
        matches!(e, kube::Error::Api(s) if s.code == 401)
    }

    /// The error and its sources, as one line.
    fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        let mut out = e.to_string();
        let mut cur = e.source();
        while let Some(s) = cur {
            out.push_str(": ");
            out.push_str(&s.to_string());
            cur = s.source();
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_mint_and_an_old_token_is_replaced() {
        let Some(bed) = KubeBed::start() else { return };
        let (access, admin) = bed_access(&bed);

        // A slow mint: without one refresh at a time, every request would find no token and mint.
        let source = Scripted::new(vec![Ok(admin.clone())], Duration::from_millis(300));
        let c = client_with_source(&access, source.clone(), REFRESH_AFTER).unwrap();
        assert_eq!(source.mints(), 0, "nothing is minted before the first request");
        let all = futures::future::join_all((0..16).map(|_| list(&c))).await;
        for r in all {
            assert!(r.expect("list with the minted token") > 0);
        }
        assert_eq!(source.mints(), 1, "16 concurrent requests share one mint");
        for _ in 0..3 {
            list(&c).await.unwrap();
        }
        assert_eq!(source.mints(), 1, "a young token is reused");

        // refresh_after = 0: every request finds its token too old.
        let source = Scripted::new(vec![Ok(admin.clone())], Duration::ZERO);
        let c = client_with_source(&access, source.clone(), Duration::ZERO).unwrap();
        for i in 1..=3 {
            list(&c).await.unwrap();
            assert_eq!(source.mints(), i);
        }

        // refresh_after = 1 ms: back-to-back requests after a pause each get a new token.
        let source = Scripted::new(vec![Ok(admin.clone())], Duration::ZERO);
        let c = client_with_source(&access, source.clone(), Duration::from_millis(1)).unwrap();
        for i in 1..=3 {
            list(&c).await.unwrap();
            assert_eq!(source.mints(), i);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_token_is_replaced_and_the_request_sent_again() {
        let Some(bed) = KubeBed::start() else { return };
        let (access, admin) = bed_access(&bed);
        let wrong = || Ok("k8s-aws-v1.expired".to_string());

        // One refusal: the same request goes out again with a new token and succeeds.
        let source = Scripted::new(vec![wrong(), Ok(admin.clone())], Duration::ZERO);
        let c = client_with_source(&access, source.clone(), REFRESH_AFTER).unwrap();
        list(&c).await.expect("the request resent with the new token");
        assert_eq!(source.mints(), 2, "the refused token was replaced");
        list(&c).await.unwrap();
        assert_eq!(source.mints(), 2, "the replacement is kept");

        // A request with a body (POST) is replayed whole.
        let source = Scripted::new(vec![wrong(), Ok(admin.clone())], Duration::ZERO);
        let c = client_with_source(&access, source.clone(), REFRESH_AFTER).unwrap();
        let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
        let name = format!("karpctl-refresh-{}", std::process::id());
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.expect("create after one refusal");
        assert_eq!(source.mints(), 2);
        let got = cms.get(&name).await.unwrap();
        assert_eq!(got.data.unwrap()["k"], "v", "the body arrived on the second attempt");
        cms.delete(&name, &Default::default()).await.unwrap();

        // Concurrent requests refused with the same token replace it once.
        let source = Scripted::new(vec![wrong(), Ok(admin.clone())], Duration::from_millis(200));
        let c = client_with_source(&access, source.clone(), REFRESH_AFTER).unwrap();
        for r in futures::future::join_all((0..8).map(|_| list(&c))).await {
            r.expect("each request resent once");
        }
        assert_eq!(source.mints(), 2, "one mint, one replacement for 8 refusals");

        // A new token refused again is an error: one resend, not a loop.
        let source = Scripted::new(vec![wrong()], Duration::ZERO);
        let c = client_with_source(&access, source.clone(), REFRESH_AFTER).unwrap();
        let e = list(&c).await.expect_err("a token the server never accepts");
        assert!(is_401(&e), "{e:?}");
        assert_eq!(source.mints(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_mint_is_named_and_not_kept() {
        let Some(bed) = KubeBed::start() else { return };
        let (access, admin) = bed_access(&bed);
        let source = Scripted::new(vec![Err("the SSO session has expired".into()), Ok(admin)], Duration::ZERO);
        let c = client_with_source(&access, source.clone(), REFRESH_AFTER).unwrap();
        let e = list(&c).await.expect_err("no token, no request");
        let text = chain(&e);
        assert!(text.contains("minting an EKS token for cluster `bed`") && text.contains("the SSO session has expired"), "{text}");
        list(&c).await.expect("the next request mints again");
        assert_eq!(source.mints(), 2);
    }
}
