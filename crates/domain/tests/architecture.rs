//! ARCHITECTURE.md's code map says what each crate must not depend on; this reads `cargo metadata` and fails when a
//! crate's own (non-dev) dependencies break that table, naming the crate, the dependency and the rule.

use std::collections::BTreeMap;

use serde_json::Value;

/// ARCHITECTURE.md "Code map", column "must not depend on", as crate names.
fn forbidden() -> BTreeMap<&'static str, (&'static str, Vec<&'static str>)> {
    const AWS: [&str; 6] =
        ["aws-config", "aws-sdk-sqs", "aws-sdk-sesv2", "aws-sdk-s3", "aws-sdk-secretsmanager", "aws_lambda_events"];
    let with_aws = |names: &[&'static str]| names.iter().copied().chain(AWS).collect::<Vec<_>>();
    BTreeMap::from([
        ("domain", ("anything with I/O", with_aws(&["tokio", "reqwest", "hyper", "axum", "rusqlite", "tiberius"]))),
        (
            "engine",
            ("axum, reqwest, rusqlite, tiberius, the AWS SDK", with_aws(&["axum", "reqwest", "rusqlite", "tiberius"])),
        ),
        ("store", ("axum, reqwest, the AWS SDK", with_aws(&["axum", "reqwest"]))),
        ("carriers", ("axum, SQL", vec!["axum", "rusqlite", "tiberius"])),
        ("simulators", ("domain, engine, store: a simulator is the carrier's side", vec!["domain", "engine", "store"])),
        ("api", ("SQL, reqwest, the AWS SDK", with_aws(&["rusqlite", "tiberius", "reqwest"]))),
        ("aws", ("axum, SQL", vec!["axum", "rusqlite", "tiberius"])),
    ])
}

#[test]
fn no_crate_depends_on_what_the_architecture_forbids_it() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(&root)
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let rules = forbidden();
    let mut checked = Vec::new();
    let mut broken = Vec::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name");
        let Some((rule, names)) = rules.get(name) else { continue };
        checked.push(name.to_string());
        for dep in package["dependencies"].as_array().expect("dependencies") {
            let dep_name = dep["name"].as_str().expect("dependency name");
            let normal = dep["kind"].is_null();
            if normal && names.contains(&dep_name) {
                broken.push(format!("{name} depends on {dep_name} (ARCHITECTURE.md: must not depend on {rule})"));
            }
        }
    }
    checked.sort();
    let mut expected: Vec<String> = rules.keys().map(|k| k.to_string()).collect();
    expected.sort();
    assert_eq!(checked, expected, "every crate of the table was found");
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
