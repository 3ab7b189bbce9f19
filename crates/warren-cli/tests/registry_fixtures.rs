//! The registry test fixtures themselves: images written by `common::oci_layout` (and by real
//! umoci) and pushed with skopeo come back from a real `docker-registry` byte for byte, with
//! the layout's digests and media types, anonymously and behind htpasswd auth.
mod common;

use std::io::Read;
use std::path::Path;

use common::oci_layout::{
    busybox_layer, sha256_digest, umoci_image, Compression, Image, ImageConfig, ImageDesc,
    IndexDesc, Layer, OciLayout, MT_INDEX, MT_LAYER_GZIP, MT_LAYER_TAR, MT_LAYER_ZSTD, MT_MANIFEST,
};
use common::registry::Registry;
use reqwest::StatusCode;
use serde_json::Value;

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.oci.image.index.v1+json";

struct Fixture {
    layout: OciLayout,
    gz: ImageDesc,
    zst: ImageDesc,
    plain: ImageDesc,
    multi: IndexDesc,
    _scratch: tempfile::TempDir,
}

fn small_layer(c: Compression) -> Layer {
    Layer::new(c)
        .dir("app", 0o755)
        .file("app/hello.txt", b"hello\n", 0o644)
        .file("app/run.sh", b"#!/bin/sh\necho run\n", 0o755)
        .symlink("app/latest", "hello.txt")
        .hardlink("app/hello.hard", "app/hello.txt")
        .whiteout("etc/group")
        .opaque("tmp")
}

fn fixture() -> Fixture {
    let scratch = tempfile::Builder::new()
        .prefix("warren-test-layout-")
        .tempdir_in("/var/tmp")
        .expect("scratch");
    let mut layout = OciLayout::create(&scratch.path().join("layout"));
    let gz = layout.add_image(
        "gz",
        &Image::new(vec![
            busybox_layer(Compression::Gzip),
            small_layer(Compression::Gzip),
        ]),
    );
    let zst = layout.add_image(
        "zst",
        &Image::new(vec![
            Layer::new(Compression::Zstd).file("etc/os", b"zstd\n", 0o644),
            small_layer(Compression::Zstd),
        ])
        .with_config(ImageConfig {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["echo hi".into()]),
            working_dir: Some("/app".into()),
            user: Some("1000:1000".into()),
            exposed_ports: vec!["8080/tcp".into()],
            ..ImageConfig::default()
        }),
    );
    let plain = layout.add_image("plain", &Image::new(vec![small_layer(Compression::None)]));
    let arch = |a: &str| {
        Image::new(vec![Layer::new(Compression::Gzip).file(
            "arch",
            a.as_bytes(),
            0o644,
        )])
        .with_config(ImageConfig {
            architecture: a.into(),
            ..ImageConfig::default()
        })
    };
    let multi = layout.add_index("multi", &[arch("amd64"), arch("arm64")]);
    Fixture {
        layout,
        gz,
        zst,
        plain,
        multi,
        _scratch: scratch,
    }
}

/// GETs `path` of the registry, with basic auth when it has credentials.
async fn get(reg: &Registry, path: &str, accept: &str) -> reqwest::Response {
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut rb = http
        .get(format!("{}{path}", reg.url()))
        .header("accept", accept);
    if let Some((u, p)) = &reg.creds {
        rb = rb.basic_auth(u, Some(p));
    }
    rb.send().await.expect("GET registry")
}

/// The manifest (or index) `reference` of `repo`, checked against `digest` and `media_type`.
async fn manifest(reg: &Registry, repo: &str, reference: &str, digest: &str, mt: &str) -> Value {
    let resp = get(reg, &format!("/v2/{repo}/manifests/{reference}"), ACCEPT).await;
    assert_eq!(resp.status(), StatusCode::OK, "{repo}:{reference}");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("docker-content-digest"), digest);
    assert_eq!(header("content-type"), mt);
    let body = resp.bytes().await.expect("manifest body");
    assert_eq!(sha256_digest(&body), digest, "{repo}:{reference} bytes");
    serde_json::from_slice(&body).expect("manifest JSON")
}

async fn blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let resp = get(reg, &format!("/v2/{repo}/blobs/{digest}"), "*/*").await;
    assert_eq!(resp.status(), StatusCode::OK, "blob {digest}");
    let body = resp.bytes().await.expect("blob body").to_vec();
    assert_eq!(sha256_digest(&body), digest);
    body
}

/// The image pushed as `repo:tag` is `want`, layers and config byte for byte.
async fn check_image(reg: &Registry, repo: &str, tag: &str, want: &ImageDesc) {
    let m = manifest(reg, repo, tag, &want.manifest.digest, MT_MANIFEST).await;
    assert_eq!(m, want.manifest_json);
    let config: Value =
        serde_json::from_slice(&blob(reg, repo, &want.config.digest).await).expect("config");
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!(want.diff_ids)
    );
    for (l, diff_id) in want.layers.iter().zip(&want.diff_ids) {
        let bytes = blob(reg, repo, &l.digest).await;
        let tar = match l.media_type.as_str() {
            MT_LAYER_GZIP => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(bytes.as_slice())
                    .read_to_end(&mut out)
                    .expect("gunzip");
                out
            }
            MT_LAYER_ZSTD => zstd::decode_all(bytes.as_slice()).expect("unzstd"),
            MT_LAYER_TAR => bytes,
            other => panic!("media type {other}"),
        };
        assert_eq!(&sha256_digest(&tar), diff_id, "diff_id of {}", l.digest);
    }
}

async fn check_all(reg: &Registry, f: &Fixture) {
    check_image(reg, "img/gz", "v1", &f.gz).await;
    check_image(reg, "img/zst", "v1", &f.zst).await;
    check_image(reg, "img/plain", "v1", &f.plain).await;
    let index = manifest(reg, "img/multi", "v1", &f.multi.index.digest, MT_INDEX).await;
    let listed: Vec<(&str, &str)> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            (
                m["digest"].as_str().unwrap_or_default(),
                m["platform"]["architecture"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let want: Vec<(&str, &str)> = f
        .multi
        .images
        .iter()
        .map(|i| i.manifest.digest.as_str())
        .zip(["amd64", "arm64"])
        .collect();
    assert_eq!(listed, want);
    for img in &f.multi.images {
        check_image(reg, "img/multi", &img.manifest.digest, img).await;
    }
}

fn push_all(reg: &Registry, layout: &Path) {
    reg.push(layout, "gz", "img/gz:v1", false);
    reg.push(layout, "zst", "img/zst:v1", false);
    reg.push(layout, "plain", "img/plain:v1", false);
    reg.push(layout, "multi", "img/multi:v1", true);
}

#[tokio::test]
async fn anonymous_registry_serves_the_layouts_bytes() {
    let f = fixture();
    assert_eq!(f.zst.layers[0].media_type, MT_LAYER_ZSTD);
    assert_eq!(f.plain.layers[0].media_type, MT_LAYER_TAR);
    let reg = Registry::start();
    push_all(&reg, &f.layout.dir);
    check_all(&reg, &f).await;

    // The access log counts whole GETs of a blob; blob_path is the stored copy.
    let layer = &f.gz.layers[1].digest;
    assert_eq!(reg.blob_get_count(layer), 1);
    blob(&reg, "img/gz", layer).await;
    assert_eq!(reg.blob_get_count(layer), 2);
    let stored = std::fs::read(reg.blob_path(layer)).expect("stored blob");
    assert_eq!(&sha256_digest(&stored), layer);

    // A tampered blob is served as is: the client has to notice.
    std::fs::write(reg.blob_path(layer), b"tampered").expect("tamper");
    let resp = get(&reg, &format!("/v2/img/gz/blobs/{layer}"), "*/*").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.bytes().await.expect("body").as_ref(), b"tampered");
    assert_eq!(reg.blob_get_statuses(layer), vec![200, 200, 200]);
}

#[tokio::test]
async fn htpasswd_registry_wants_the_password() {
    let f = fixture();
    let reg = Registry::start_with_auth("warren", "s3cret");
    push_all(&reg, &f.layout.dir);
    check_all(&reg, &f).await;

    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("{}/v2/img/gz/manifests/v1", reg.url());
    let anon = http.get(&url).send().await.expect("GET");
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    assert!(anon
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .starts_with("Basic"));
    let wrong = http
        .get(&url)
        .basic_auth("warren", Some("wrong"))
        .send()
        .await
        .expect("GET");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn umoci_image_has_whiteouts_and_pushes() {
    let scratch = tempfile::Builder::new()
        .prefix("warren-test-umoci-")
        .tempdir_in("/var/tmp")
        .expect("scratch");
    let layout = scratch.path().join("layout");
    let img = umoci_image(&layout, "latest");
    assert_eq!(img.layers.len(), 2);
    let top = std::fs::read(
        layout
            .join("blobs/sha256")
            .join(img.layers[1].digest.trim_start_matches("sha256:")),
    )
    .expect("layer 2");
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(top.as_slice()));
    for e in ar.entries().expect("tar") {
        let e = e.expect("entry");
        names.push(e.path().expect("path").to_string_lossy().into_owned());
    }
    for want in ["etc/.wh.motd", "opt/.wh.removed", "etc/layer2"] {
        assert!(
            names.iter().any(|n| n.trim_start_matches("./") == want),
            "{want} not in umoci's layer 2: {names:?}"
        );
    }
    let reg = Registry::start();
    let digest = reg.push(&layout, "latest", "umoci/busybox:latest", false);
    let m = manifest(&reg, "umoci/busybox", "latest", &digest, MT_MANIFEST).await;
    let config: Value = serde_json::from_slice(
        &blob(
            &reg,
            "umoci/busybox",
            m["config"]["digest"].as_str().expect("config"),
        )
        .await,
    )
    .expect("config");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
    assert!(config["config"]["Env"]
        .as_array()
        .expect("Env")
        .iter()
        .any(|e| e == "WARREN_FIXTURE=umoci"));
}
