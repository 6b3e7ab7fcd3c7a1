"""moto's server on a free loopback port, for `terraform apply` and `destroy` in CI (.ci/terraform-apply).

Writes the endpoint (http://127.0.0.1:PORT) to the file given as the only argument once the
server listens, then serves until SIGTERM or SIGINT. Everything lives in memory: a new server
is a new, empty account, so a run never sees the one before it.

Run it with MOTO_IAM_LOAD_MANAGED_POLICIES=true so the AWS-managed policies the stack attaches
(AmazonSSMManagedInstanceCore, AWSCodeDeployRole) exist.

Two gaps of moto's own, filled here rather than bent around in the stack (each stops the server
from starting, naming itself, if a moto release moves what it patches):

- PutBucketLogging: moto looks through the target bucket's policy for the grant to
  logging.s3.amazonaws.com and reads every statement's Principal as a map, so a statement with
  `"Principal": "*"` (valid, and what the stack's TLS-only Deny uses) fails the call with a
  server error. The check here sees only the statements whose Principal is a map: it still
  refuses a target whose policy grants the logging service nothing, which is the order the
  apply must get right.
- CodeDeploy: moto has no DeleteDeploymentGroup or DeleteApplication, so `terraform destroy`
  would retry them until it times out. Both are added: delete what exists, refuse what does not.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import types
from pathlib import Path
from typing import Any


def _require(owner: object, name: str) -> Any:
    found = getattr(owner, name, None)
    if found is None:
        sys.exit(f"moto_server: this moto has no {owner!r}.{name}; revisit .ci/moto_server.py for it")
    return found


def _logging_check_reads_only_map_principals() -> None:
    from moto.s3.models import FakeBucket

    original = _require(FakeBucket, "_log_permissions_enabled_policy")

    def check(target_bucket: Any, target_prefix: str | None) -> bool:
        policy = target_bucket.policy
        if policy:
            document = json.loads(policy.decode())
            statements = document.get("Statement", [])
            if isinstance(statements, dict):
                statements = [statements]
            document["Statement"] = [s for s in statements if isinstance(s.get("Principal"), dict)]
            policy = json.dumps(document).encode()
        # A stand-in, not the bucket: requests served meanwhile still see the real policy.
        bucket = target_bucket
        view = types.SimpleNamespace(policy=policy, name=bucket.name, partition=bucket.partition)
        return bool(original(target_bucket=view, target_prefix=target_prefix))

    FakeBucket._log_permissions_enabled_policy = staticmethod(check)  # type: ignore[method-assign]


def _codedeploy_deletes() -> None:
    from moto.codedeploy.models import CodeDeployBackend
    from moto.codedeploy.responses import CodeDeployResponse
    from moto.core.responses import ActionResult, EmptyResult

    for name in ("get_deployment_group", "get_application"):
        _require(CodeDeployBackend, name)

    def delete_deployment_group(self: Any) -> ActionResult:
        backend = self.codedeploy_backend
        application = self._get_param("applicationName")
        group = self._get_param("deploymentGroupName")
        backend.get_deployment_group(application_name=application, deployment_group_name=group)  # or raise
        del backend.deployment_groups[application][group]
        return ActionResult({"hooksNotCleanedUp": []})

    def delete_application(self: Any) -> EmptyResult:
        backend = self.codedeploy_backend
        application = self._get_param("applicationName")
        backend.get_application(application_name=application)  # or raise
        del backend.applications[application]
        backend.deployment_groups.pop(application, None)
        return EmptyResult()

    CodeDeployResponse.delete_deployment_group = delete_deployment_group  # type: ignore[attr-defined]
    CodeDeployResponse.delete_application = delete_application  # type: ignore[attr-defined]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: moto_server.py ENDPOINT_FILE")
    endpoint_file = Path(sys.argv[1])

    from moto.server import ThreadedMotoServer

    _logging_check_reads_only_map_principals()
    _codedeploy_deletes()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not one line per request

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # Written whole, then renamed: a reader never sees half an address.
    partial = endpoint_file.with_name(endpoint_file.name + ".partial")
    partial.write_text(f"http://{host}:{port}\n")
    partial.replace(endpoint_file)
    stop.wait()
    server.stop()


if __name__ == "__main__":
    main()
