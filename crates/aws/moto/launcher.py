#!/usr/bin/env python3
"""moto server for the AWS adapter's tests, patched where moto lacks AWS behaviour.

Starts moto's ThreadedMotoServer on 127.0.0.1 and a free port (or --port), prints
its URL on stdout as the first line, and runs until it is killed (SIGTERM/SIGINT).

What this adds to moto, in process (nothing here is faked in Rust):

* Launch failures. An ASG tag
      batch-autoscaler.test/fail-launches = <Code>[:<N>]
  makes the group's launches fail: each instance that would have been launched is
  not launched and a scaling activity with StatusCode "Failed" and AWS's message for
  <Code> is recorded instead (at most N instances for the group, unlimited without
  N). Codes: InsufficientInstanceCapacity, InstanceLimitExceeded, VcpuLimitExceeded,
  MaxSpotInstanceCountExceeded, VolumeLimitExceeded, InvalidAMIID.NotFound,
  Unsupported. Desired capacity stays where it was set, as on AWS.
* Limited capacity. An ASG tag
      batch-autoscaler.test/launch-capacity = <N>[:<window>]
  lets the group launch at most N more instances while the tag keeps this value
  (a new value starts a new count); every instance beyond fails as above with
  InsufficientInstanceCapacity. Remove the tag to end the window.
* DescribeScalingActivities returns the recorded activities (failed launches and
  successful ones), newest first, filtered by group, paginated with MaxRecords and
  NextToken. moto alone always returns an empty list.
* SetDesiredCapacity above MaxSize (or below MinSize) fails with ValidationError like
  AWS; SetDesiredCapacity and TerminateInstanceInAutoScalingGroup on an unknown group
  or instance fail with ValidationError instead of moto's HTML 500.
* UpdateAutoScalingGroup honours CapacityRebalance (moto reads it only on create).
* A fault switch: POST /batch-autoscaler/faults with JSON
      {"throttle_percent": 20, "seed": 1, "regions": ["eu-west-1"], "services": ["ec2"]}
  makes that share of AWS API calls (of the listed regions and services, or all;
  services as in the SigV4 credential scope: "autoscaling", "ec2", "sqs") fail with
  a throttling error (autoscaling: HTTP 400 "Throttling"; EC2: HTTP 503
  "RequestLimitExceeded"; SQS, JSON protocol: HTTP 400 "RequestThrottled"), drawn
  from a seeded RNG; "actions": ["DetachInstances"] narrows it to those API actions.
  GET returns the switch and the number of injected faults; {"throttle_percent": 0}
  turns it off.
* A log of mutating calls per caller: GET /batch-autoscaler/calls returns
      {"<access key id>": [{"action": "SetDesiredCapacity", "at_ms": 1733...}, ...]}
  for every call whose Action changes something (SetDesiredCapacity,
  TerminateInstanceInAutoScalingGroup, tag writes, ...), keyed by the access key of
  its SigV4 credential, so a test can tell which of two replicas (given distinct
  keys) made a call, and when.
* POST /moto-api/reset also clears everything above.
"""

import argparse
import json
import random
import re
import signal
import sys
import threading
import uuid
from datetime import datetime, timezone

from moto.autoscaling import models as as_models
from moto.autoscaling import responses as as_responses
from moto.autoscaling.exceptions import ValidationError
from moto.core.responses import ActionResult
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

FAIL_TAG = "batch-autoscaler.test/fail-launches"
CAPACITY_TAG = "batch-autoscaler.test/launch-capacity"

_lock = threading.RLock()
# (account, region) -> list of activity dicts, oldest first.
_activities = {}
# (account, region, group name) -> failures injected so far.
_injected = {}
# (account, region, group, tag value) -> instances launched under that capacity tag
_capacity_used = {}
_faults = {"throttle_percent": 0, "seed": 0, "regions": None, "services": None, "actions": None, "injected": 0}
_fault_rng = random.Random(0)


# Mutating calls per access key id (see the module docs).
_calls = {}
_MUTATING_PREFIXES = ("Set", "Terminate", "Create", "Delete", "Update", "Put", "Attach", "Detach", "Suspend", "Resume", "Run", "Start", "Stop")
_ACCESS_KEY = re.compile(r"Credential=([^/,\s]+)/")
_ACTION = re.compile(rb"(?:^|&)Action=([A-Za-z]+)")


def _record_call(environ):
    """Logs the call if its Action mutates; keeps the body readable for moto."""
    import io

    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)
    action = _ACTION.search(body) or _ACTION.search(environ.get("QUERY_STRING", "").encode())
    if action is None:
        return
    name = action.group(1).decode()
    if not name.startswith(_MUTATING_PREFIXES):
        return
    key = _ACCESS_KEY.search(environ.get("HTTP_AUTHORIZATION", ""))
    caller = key.group(1) if key else "anonymous"
    at_ms = int(datetime.now(timezone.utc).timestamp() * 1000)
    with _lock:
        _calls.setdefault(caller, []).append({"action": name, "at_ms": at_ms})


def _reset_patch_state():
    with _lock:
        _activities.clear()
        _injected.clear()
        _capacity_used.clear()
        _calls.clear()
        _faults.update({"throttle_percent": 0, "seed": 0, "regions": None, "services": None, "actions": None, "injected": 0})
        _fault_rng.seed(0)


def _now():
    return datetime.now(timezone.utc)


def _failure_message(code, group):
    instance_type = group.instance_type or "unknown"
    zones = list(group.availability_zones or [])
    zone = zones[0] if zones else "unknown"
    others = ", ".join(z for z in zones[1:]) or "another Availability Zone"
    messages = {
        "InsufficientInstanceCapacity": (
            f"We currently do not have sufficient {instance_type} capacity in the Availability Zone you "
            f"requested ({zone}). Our system will be working on provisioning additional capacity. You can "
            f"currently get {instance_type} capacity by not specifying an Availability Zone in your request "
            f"or choosing {others}. Launching EC2 instance failed."
        ),
        "InstanceLimitExceeded": (
            "You have requested more instances (21) than your current instance limit of 20 allows for the "
            "specified instance type. Please visit http://aws.amazon.com/contact-us/ec2-request to request "
            "an adjustment to this limit. Launching EC2 instance failed."
        ),
        "VcpuLimitExceeded": (
            "You have requested more vCPU capacity than your current vCPU limit of 32 allows for the "
            "instance bucket that the specified instance type belongs to. Please visit "
            "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit. "
            "Launching EC2 instance failed."
        ),
        "MaxSpotInstanceCountExceeded": "Max spot instance count exceeded. Launching EC2 instance failed.",
        "VolumeLimitExceeded": (
            "Client.VolumeLimitExceeded: Volume limit exceeded. Launching EC2 instance failed."
        ),
        "InvalidAMIID.NotFound": (
            "The image id '[ami-00000000]' does not exist. Launching EC2 instance failed."
        ),
        "Unsupported": (
            f"Your requested instance type ({instance_type}) is not supported in your requested "
            f"Availability Zone ({zone}). Please retry your request by not specifying an Availability "
            f"Zone or choosing {others}. Launching EC2 instance failed."
        ),
    }
    return zone, messages.get(code, f"{code}. Launching EC2 instance failed.")


def _record(group, description, cause, status_code, status_message=None, details=None):
    key = (group.account_id, group.region)
    start = _now()
    activity = {
        "ActivityId": str(uuid.uuid4()),
        "AutoScalingGroupName": group.name,
        "Description": description,
        "Cause": cause,
        "StartTime": start,
        "EndTime": start,
        "StatusCode": status_code,
        "Progress": 100,
        "Details": json.dumps(details or {}),
        "AutoScalingGroupARN": group.arn,
    }
    if status_message is not None:
        activity["StatusMessage"] = status_message
    with _lock:
        _activities.setdefault(key, []).append(activity)


def _fail_spec(group):
    for tag in group.tags:
        if tag.get("Key") == FAIL_TAG:
            code, _, limit = str(tag.get("Value", "")).partition(":")
            return code.strip(), int(limit) if limit.strip().isdigit() else None
    return None


_original_replace = as_models.FakeAutoScalingGroup.replace_autoscaling_group_instances


def _capacity_spec(group):
    for tag in group.tags:
        if tag.get("Key") == CAPACITY_TAG:
            value = str(tag.get("Value", "")).strip()
            n = value.partition(":")[0].strip()
            if n.isdigit():
                return value, int(n)
    return None


def _replace_instances(self, count_needed, propagated_tags):
    spec = _fail_spec(self)
    capacity = _capacity_spec(self)
    failing = 0
    if spec is None and capacity is not None:
        value, available = capacity
        ckey = (self.account_id, self.region, self.name, value)
        with _lock:
            used = _capacity_used.get(ckey, 0)
            launching_now = max(0, min(count_needed, available - used))
            _capacity_used[ckey] = used + launching_now
        if launching_now < count_needed:
            spec = ("InsufficientInstanceCapacity", None)
            failing = count_needed - launching_now
    if spec is not None:
        code, limit = spec
        key = (self.account_id, self.region, self.name)
        with _lock:
            done = _injected.get(key, 0)
            if capacity is None or failing == 0:
                failing = count_needed if limit is None else max(0, min(count_needed, limit - done))
            _injected[key] = done + failing
        before = len(self.active_instances())
        cause = (
            f"At {_now().strftime('%Y-%m-%dT%H:%M:%SZ')} an instance was started in response to a difference "
            f"between desired and actual capacity, increasing the capacity from {before} to "
            f"{self.desired_capacity}."
        )
        zone, message = _failure_message(code, self)
        for _ in range(failing):
            _record(
                self,
                f"Launching a new EC2 instance.  Status Reason: {message}",
                cause,
                "Failed",
                status_message=message,
                details={"Subnet ID": "subnet-00000000", "Availability Zone": zone},
            )
    launching = count_needed - failing
    if launching <= 0:
        return
    known = {state.instance.id for state in self.instance_states}
    _original_replace(self, launching, propagated_tags)
    for state in self.instance_states:
        if state.instance.id not in known:
            _record(
                self,
                f"Launching a new EC2 instance: {state.instance.id}",
                "At {} an instance was started in response to a difference between desired and actual "
                "capacity.".format(_now().strftime("%Y-%m-%dT%H:%M:%SZ")),
                "Successful",
                details={"Availability Zone": getattr(state.instance.placement, "zone", None)},
            )


as_models.FakeAutoScalingGroup.replace_autoscaling_group_instances = _replace_instances


_original_set_desired = as_models.AutoScalingBackend.set_desired_capacity


def _set_desired_capacity(self, group_name, desired_capacity):
    group = self.autoscaling_groups.get(group_name)
    if group is None:
        raise ValidationError(f"AutoScalingGroup name not found - AutoScalingGroup '{group_name}' not found")
    if desired_capacity is not None and group.max_size is not None and desired_capacity > group.max_size:
        raise ValidationError(
            f"New SetDesiredCapacity value {desired_capacity} is above max value {group.max_size} for the AutoScalingGroup."
        )
    if desired_capacity is not None and group.min_size is not None and desired_capacity < group.min_size:
        raise ValidationError(
            f"New SetDesiredCapacity value {desired_capacity} is below min value {group.min_size} for the AutoScalingGroup."
        )
    return _original_set_desired(self, group_name, desired_capacity)


as_models.AutoScalingBackend.set_desired_capacity = _set_desired_capacity


_original_terminate = as_models.AutoScalingBackend.terminate_instance


def _terminate_instance(self, instance_id, should_decrement):
    if not any(
        state.instance.id == instance_id
        for group in self.autoscaling_groups.values()
        for state in group.instance_states
    ):
        raise ValidationError(f"Instance Id not found - No managed instance found for instance ID: {instance_id}")
    return _original_terminate(self, instance_id, should_decrement)


as_models.AutoScalingBackend.terminate_instance = _terminate_instance


def _describe_scaling_activities(self):
    group_name = self._get_param("AutoScalingGroupName")
    activity_ids = self._get_param("ActivityIds", [])
    max_records = self._get_int_param("MaxRecords", 100) or 100
    token = self._get_param("NextToken")
    if max_records > 100 or max_records < 1:
        raise ValidationError("MaxRecords must be between 1 and 100.")
    with _lock:
        activities = list(_activities.get((self.current_account, self.region), []))
    activities.reverse()  # newest first, like AWS
    if group_name:
        activities = [a for a in activities if a["AutoScalingGroupName"] == group_name]
    if activity_ids:
        activities = [a for a in activities if a["ActivityId"] in activity_ids]
    start = 0
    if token:
        ids = [a["ActivityId"] for a in activities]
        if token not in ids:
            raise ValidationError("Invalid NextToken.")
        start = ids.index(token) + 1
    page = activities[start : start + max_records]
    result = {"Activities": page}
    if len(activities) > start + max_records:
        result["NextToken"] = page[-1]["ActivityId"]
    return ActionResult(result)


as_responses.AutoScalingResponse.describe_scaling_activities = _describe_scaling_activities


_original_update_group = as_responses.AutoScalingResponse.update_auto_scaling_group


def _update_auto_scaling_group(self):
    """moto's UpdateAutoScalingGroup ignores CapacityRebalance (its Create reads it)."""
    result = _original_update_group(self)
    rebalance = self._get_bool_param("CapacityRebalance", None)
    if rebalance is not None:
        group = self.autoscaling_backend.autoscaling_groups.get(self._get_param("AutoScalingGroupName"))
        if group is not None:
            group.capacity_rebalance = rebalance
    return result


as_responses.AutoScalingResponse.update_auto_scaling_group = _update_auto_scaling_group


_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request")


def _throttle_response(start_response, service):
    request_id = str(uuid.uuid4())
    if service == "sqs":
        # SQS's JSON protocol (what the adapter speaks to SQS).
        data = json.dumps({"__type": "com.amazonaws.sqs#RequestThrottled", "message": "Request is throttled."}).encode()
        start_response(
            "400 Bad Request",
            [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("x-amzn-query-error", "RequestThrottled;Sender"),
                ("x-amzn-RequestId", request_id),
                ("Content-Length", str(len(data))),
            ],
        )
        return [data]
    if service == "ec2":
        body = (
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
            "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
            f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
        )
        status = "503 Service Unavailable"
    else:
        body = (
            "<ErrorResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><Error>"
            "<Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        status = "400 Bad Request"
    data = body.encode()
    start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(data)))])
    return [data]


def _json_response(start_response, status, payload):
    data = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


class PatchMiddleware:
    """WSGI middleware: the fault switch, throttling injection, and reset of our state."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/batch-autoscaler/faults":
            if method == "POST":
                length = int(environ.get("CONTENT_LENGTH") or 0)
                try:
                    body = json.loads(environ["wsgi.input"].read(length) or b"{}")
                    percent = float(body.get("throttle_percent", 0))
                    seed = int(body.get("seed", 0))
                    regions = body.get("regions")
                    services = body.get("services")
                    actions = body.get("actions")
                except (ValueError, TypeError, AttributeError) as error:
                    return _json_response(start_response, "400 Bad Request", {"error": str(error)})
                with _lock:
                    _faults.update(
                        {"throttle_percent": percent, "seed": seed, "regions": regions, "services": services, "actions": actions, "injected": 0}
                    )
                    _fault_rng.seed(seed)
            with _lock:
                return _json_response(start_response, "200 OK", dict(_faults))
        if path == "/batch-autoscaler/calls":
            with _lock:
                return _json_response(start_response, "200 OK", {k: list(v) for k, v in _calls.items()})
        if path == "/moto-api/reset" and method == "POST":
            _reset_patch_state()
            return self.app(environ, start_response)
        if not path.startswith("/moto-api") and method == "POST":
            _record_call(environ)
        if not path.startswith("/moto-api") and self._should_throttle(environ):
            scope = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
            return _throttle_response(start_response, scope.group(2) if scope else "autoscaling")
        return self.app(environ, start_response)

    @staticmethod
    def _should_throttle(environ):
        with _lock:
            percent = _faults["throttle_percent"]
            if percent <= 0:
                return False
            regions = _faults["regions"]
            services = _faults["services"]
            actions = _faults["actions"]
            if actions:
                # A POST's body was made re-readable by _record_call; anything else
                # carries its Action in the query string.
                import io

                body = b""
                if isinstance(environ["wsgi.input"], io.BytesIO):
                    body = environ["wsgi.input"].getvalue()
                action = _ACTION.search(body) or _ACTION.search(environ.get("QUERY_STRING", "").encode())
                if action is None or action.group(1).decode() not in actions:
                    return False
            if regions or services:
                scope = _CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
                if scope is None:
                    return False
                if regions and scope.group(1) not in regions:
                    return False
                if services and scope.group(2) not in services:
                    return False
            if _fault_rng.random() * 100 < percent:
                _faults["injected"] += 1
                return True
            return False


class PatchedMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer with the middleware above in front of moto's app."""

    def _server_entry(self):
        app = PatchMiddleware(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    args = parser.parse_args()
    server = PatchedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
