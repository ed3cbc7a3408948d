//! The committed `openapi.json` is what the code generates, and every sample request (`events/requests/`) and
//! every request example in the README validates against it. `UPDATE_OPENAPI=1 cargo test -p api --test openapi`
//! rewrites the file after a change of the API.

use serde_json::{Value, json};

const COMMITTED: &str = include_str!("../../../openapi.json");

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let generated = api::openapi::json();
    if std::env::var("UPDATE_OPENAPI").is_ok() {
        std::fs::write(root().join("openapi.json"), format!("{generated}\n")).expect("write openapi.json");
        return;
    }
    assert_eq!(
        COMMITTED.trim_end(),
        generated.trim_end(),
        "openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p api --test openapi"
    );
    let doc: Value = serde_json::from_str(&generated).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/M2M/BulkChange", "/M2M/BulkChange/{id}/Results", "/ThingSpace/Callback", "/M2M/AssociateCustomer"] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
}

/// A validator for one request schema of the document.
fn validator(schema: &str) -> jsonschema::Validator {
    let doc: Value = serde_json::from_str(COMMITTED).expect("openapi.json is JSON");
    let root = json!({"$ref": format!("#/components/schemas/{schema}"), "components": doc["components"]});
    jsonschema::validator_for(&root).expect("a valid schema")
}

fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect()
}

#[test]
fn every_sample_request_validates() {
    let bulk = validator("BulkChangeRequestWire");
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("events/requests")).expect("samples") {
        let path = entry.expect("entry").path();
        let sample: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("JSON");
        assert_eq!(errors(&bulk, &sample), Vec::<String>::new(), "{}", path.display());
        seen += 1;
    }
    assert!(seen >= 20, "{seen} samples");
    let webhook = validator("NewWebhookRequest");
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("events/webhooks/register.json")).expect("webhook sample"),
    )
    .expect("JSON");
    assert_eq!(errors(&webhook, &sample), Vec::<String>::new(), "events/webhooks/register.json");
    assert!(!errors(&webhook, &json!({"Url": "https://x.example", "Secret": "mine"})).is_empty(), "unknown field");
    // And the schema does say no to a request of the wrong shape.
    assert!(!errors(&bulk, &json!({"ServiceProviderId": "ten", "Devices": "8901"})).is_empty());
}

#[test]
fn every_request_example_in_the_readme_validates() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let (bulk, associate) = (validator("BulkChangeRequestWire"), validator("AssociateCustomerRequest"));
    let webhook = validator("NewWebhookRequest");
    let mut checked = 0;
    // `curl ... /M2M/<route> ... -d '{...}'` examples.
    for command in readme.split("curl ").skip(1) {
        let Some(start) = command.find("-d '") else { continue };
        let body = &command[start + 4..];
        let Some(end) = body.find("}'") else { continue };
        let json: Value =
            serde_json::from_str(&body[..=end]).unwrap_or_else(|e| panic!("README example: {e}\n{}", &body[..=end]));
        let schema = if command[..start].contains("/M2M/AssociateCustomer") {
            &associate
        } else if command[..start].contains("/M2M/Webhooks") {
            &webhook
        } else {
            &bulk
        };
        assert_eq!(errors(schema, &json), Vec::<String>::new(), "{json}");
        checked += 1;
    }
    // ```json blocks that are bulk change requests.
    for block in readme.split("```json").skip(1) {
        let text = block.split("```").next().unwrap_or_default();
        let Ok(json) = serde_json::from_str::<Value>(text) else { continue };
        if json.get("ChangeType").is_some() {
            assert_eq!(errors(&bulk, &json), Vec::<String>::new(), "{json}");
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} README examples checked");
}
