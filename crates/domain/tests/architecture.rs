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

/// The top-level modules of `engine` a file of module `from` names (`crate::x`; `super::x` in a top-level file).
fn engine_module_uses() -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/src");
    let mut uses: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).expect("read dir").map(|e| e.expect("entry").path()));
            continue;
        }
        let rel = path.strip_prefix(&src).expect("under src");
        let top = rel.components().next().expect("a component").as_os_str().to_string_lossy().replace(".rs", "");
        if path.extension().is_none_or(|e| e != "rs") || top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        // Test modules may reach anywhere; only the code itself counts.
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap_or_default();
        let mut named: Vec<String> = code.split("crate::").skip(1).map(ident).collect();
        if rel.components().count() == 1 {
            named.extend(code.split("super::").skip(1).map(ident));
        }
        uses.entry(top.clone()).or_default().extend(named.into_iter().filter(|m| *m != top));
    }
    let modules: Vec<String> = uses.keys().cloned().collect();
    uses.values_mut().for_each(|named| named.retain(|m| modules.contains(m)));
    uses
}

fn ident(after: &str) -> String {
    after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// No two modules of `engine` need each other, however indirectly: each can be read, tested and moved on its own
/// (the carriers depend on `job` and `change`, never the other way).
#[test]
fn engine_modules_form_no_circle() {
    let uses = engine_module_uses();
    assert!(uses.contains_key("worker") && uses.contains_key("carrier"), "modules found: {:?}", uses.keys());
    // Depth-first search from every module; a module met again on the current path closes a circle.
    fn visit<'a>(
        m: &'a str,
        uses: &'a BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut std::collections::BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| *p == m) {
            return Some(path[at..].iter().map(|s| s.to_string()).chain([m.to_string()]).collect());
        }
        if !done.insert(m) {
            return None;
        }
        path.push(m);
        for next in uses.get(m).into_iter().flatten() {
            if let Some(circle) = visit(next, uses, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for m in uses.keys() {
        if let Some(circle) = visit(m, &uses, &mut Vec::new(), &mut done) {
            panic!("engine modules in a circle: {}", circle.join(" -> "));
        }
    }
}
