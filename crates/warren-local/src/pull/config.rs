//! The image config fields a sandbox takes as defaults, read leniently from the config blob
//! (Docker and OCI configs share these names; anything else in it is ignored).
use serde::Deserialize;
use std::collections::BTreeMap;
use warren_api::ImageConfig;

#[derive(Debug, Deserialize, Default)]
struct ConfigBlob {
    #[serde(default)]
    config: Option<Inner>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct Inner {
    env: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// The defaults in an image config blob.
pub fn parse(blob: &str) -> Result<ImageConfig, serde_json::Error> {
    let inner = serde_json::from_str::<ConfigBlob>(blob)?
        .config
        .unwrap_or_default();
    let exposed_ports = inner
        .exposed_ports
        .unwrap_or_default()
        .keys()
        .filter_map(|k| match k.split_once('/') {
            Some((port, "tcp")) => port.parse().ok(),
            Some(_) => None,
            None => k.parse().ok(),
        })
        .collect();
    Ok(ImageConfig {
        env: inner.env.unwrap_or_default(),
        entrypoint: inner.entrypoint.unwrap_or_default(),
        cmd: inner.cmd.unwrap_or_default(),
        working_dir: inner.working_dir.filter(|w| !w.is_empty()),
        user: inner.user.filter(|u| !u.is_empty()),
        exposed_ports,
        ready_cmd: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_defaults() {
        let blob = r#"{"architecture":"amd64","os":"linux","config":{
            "Env":["PATH=/usr/bin:/bin","A=1"],"Entrypoint":["/bin/sh","-c"],"Cmd":["echo hi"],
            "WorkingDir":"/srv","User":"1000:1000",
            "ExposedPorts":{"8080/tcp":{},"53/udp":{},"9000":{}}},
            "rootfs":{"type":"layers","diff_ids":[]}}"#;
        let c = parse(blob).expect("parse");
        assert_eq!(c.env, ["PATH=/usr/bin:/bin", "A=1"]);
        assert_eq!(c.entrypoint, ["/bin/sh", "-c"]);
        assert_eq!(c.cmd, ["echo hi"]);
        assert_eq!(c.working_dir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        assert_eq!(c.exposed_ports, [8080, 9000]);
    }

    #[test]
    fn empty_and_null_fields_are_absent() {
        let c = parse(r#"{"config":{"Env":null,"WorkingDir":"","Cmd":null}}"#).expect("parse");
        assert_eq!(c, ImageConfig::default());
        assert_eq!(parse("{}").expect("parse"), ImageConfig::default());
    }
}
