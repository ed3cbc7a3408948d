"""Checks template.yaml for what cfn-lint does not know we want: every alarm notifies someone, every log group
expires, every function is traced and logs JSON, every route of the API's router is a route of the HTTP API.
Run by `make template-lint` (and so by `make test`)."""
import re
import sys
from pathlib import Path

from cfnlint.decode import decode

template, matches = decode(sys.argv[1] if len(sys.argv) > 1 else "template.yaml")
if matches:
    sys.exit(f"template.yaml does not parse: {matches}")
resources = template["Resources"]
problems = []
alarms = {name: r for name, r in resources.items() if r["Type"] == "AWS::CloudWatch::Alarm"}
for name, alarm in alarms.items():
    actions = alarm["Properties"].get("AlarmActions", [])
    if {"Ref": "AlarmTopic"} not in actions:
        problems.append(f"alarm {name} notifies nobody (AlarmActions has no Ref AlarmTopic)")
topic = resources.get("AlarmTopic", {}).get("Properties", {})
if not any(s.get("Endpoint") == {"Ref": "AlarmEmail"} for s in topic.get("Subscription", [])):
    problems.append("AlarmTopic has no subscription to the AlarmEmail parameter")
for name, r in resources.items():
    if r["Type"] == "AWS::Logs::LogGroup" and "RetentionInDays" not in r.get("Properties", {}):
        problems.append(f"log group {name} keeps its logs forever")
    if r["Type"] == "AWS::Serverless::Function":
        logging = r["Properties"].get("LoggingConfig", {})
        if "LogGroup" not in logging:
            problems.append(f"function {name} logs to a log group without retention")
if template.get("Globals", {}).get("Function", {}).get("Tracing") != "Active":
    problems.append("functions are not traced (Globals.Function.Tracing: Active)")
for name in ("WorkQueue", "DeadLetterQueue"):
    if resources[name].get("DeletionPolicy") != "Retain":
        problems.append(f"{name} is deleted with the stack (DeletionPolicy: Retain)")
# The router's routes (crates/api/src/lib.rs) against the HTTP API's: a route missing from the template is a 404
# from API Gateway that no local test sees.
router = Path(__file__).resolve().parent.parent / "crates/api/src/lib.rs"
code = router.read_text()
code_routes = set()
for path, methods in re.findall(r'\.route\(\s*"([^"]+)",\s*([^\n]+)', code):
    for method in re.findall(r"\b(get|post|put|delete|patch)\(", methods):
        code_routes.add((method.upper(), path))
api_function = resources["BulkChangeApiFunction"]["Properties"]
template_routes = {
    (e["Properties"]["Method"].upper(), e["Properties"]["Path"])
    for e in api_function.get("Events", {}).values()
    if e.get("Type") == "HttpApi"
}
for method, path in sorted(code_routes - template_routes):
    problems.append(f"the router serves {method} {path}, but the HTTP API has no such route")
for method, path in sorted(template_routes - code_routes):
    problems.append(f"the HTTP API routes {method} {path}, which the router does not serve")
if not code_routes:
    problems.append(f"no routes found in {router}")
if problems:
    sys.exit("\n".join(problems))
print(
    f"template.yaml: {len(alarms)} alarms, each notifying AlarmTopic; log groups expire; functions traced; "
    f"{len(code_routes)} routes, the same in the router and the HTTP API"
)
