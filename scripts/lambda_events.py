"""Builds the Lambda events `scripts/invoke.sh --new-bulk-change` passes between the local functions.

  sqs-for SUBMIT_ANSWER   an SQS event with one work message per bulk change the API function accepted
  ids SUBMIT_ANSWER       the accepted bulk change ids, one per line
  status-for ID           events/api/03-bulk-change-status.json asking for every row of bulk change ID
  summary                 reads the status function's answer on stdin, prints each row's status, fails if
                          a row was not processed
"""

import json
import sys


def accepted_ids(path):
    with open(path) as f:
        answer = json.load(f)
    if answer.get("statusCode") != 202:
        sys.exit(f"the API function did not accept the bulk change: {answer}")
    return [int(json.loads(answer["body"])["BulkChangeId"])]


def sqs_event(ids):
    with open("events/sqs/batch-with-malformed.json") as f:
        template = json.load(f)["Records"][0]
    records = []
    for n, bulk_change_id in enumerate(ids, start=1):
        record = dict(template)
        record["messageId"] = f"invoke-new-bulk-change-{bulk_change_id}"
        record["receiptHandle"] = f"rh-invoke-{n}"
        record["body"] = json.dumps({"BulkChangeId": bulk_change_id, "Attempt": 0})
        records.append(record)
    return {"Records": records}


def status_event(bulk_change_id):
    with open("events/api/03-bulk-change-status.json") as f:
        event = json.load(f)
    path = f"/M2M/BulkChangeStatus/{bulk_change_id}"
    event["rawPath"] = path
    event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"id": str(bulk_change_id)}
    event["rawQueryString"] = "page=1&pageSize=50"
    event["queryStringParameters"] = {"page": "1", "pageSize": "50"}
    return event


def summary(answer):
    if answer.get("statusCode") != 200:
        sys.exit(f"status answered {answer.get('statusCode')}: {answer.get('body')}")
    body = json.loads(answer["body"])
    print(f"bulk change {body['BulkChangeId']}: {body['Status']}, rows by status {body['Counts']}")
    for row in body["Rows"]:
        print(f"  {row['ICCID']}: {row['Status']} {row.get('StatusDetails') or ''}".rstrip())
    waiting = [row["ICCID"] for row in body["Rows"] if row["Status"] in ("PENDING", "PROCESSING")]
    if not body["Rows"] or waiting:
        sys.exit(f"rows not processed by the worker function: {waiting or 'none at all'}")


def main():
    command, *args = sys.argv[1:]
    if command == "sqs-for":
        json.dump(sqs_event(accepted_ids(args[0])), sys.stdout, indent=2)
    elif command == "ids":
        print("\n".join(str(i) for i in accepted_ids(args[0])))
    elif command == "status-for":
        json.dump(status_event(int(args[0])), sys.stdout, indent=2)
    elif command == "summary":
        summary(json.load(sys.stdin))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
