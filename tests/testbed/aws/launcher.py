#!/usr/bin/env python3
"""Start the karpctl AWS emulator: moto in-process behind the testbed middleware, seeded like a real account.

Run it with the testbed virtualenv's python (scripts/testbed-aws.sh does that). It binds 127.0.0.1 only, writes a
JSON handle file once the account is seeded and the socket is listening, serves until SIGTERM/SIGINT, then removes
the handle file and exits 0.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import logging
import os
import signal
import sys
import threading

# moto reads these at import time
os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")  # the account has only the AMIs we seed
os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # AWS managed policies exist, as in a real account
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
for _var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
    os.environ.pop(_var, None)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BIND = "127.0.0.1"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = pick a free one; default 0)")
    p.add_argument("--handle", help="write the JSON handle here once ready (removed again on exit)")
    p.add_argument("--cluster", default="karpctl-sandbox", help="EKS cluster name (default karpctl-sandbox)")
    p.add_argument("--region", default="us-west-2", help="AWS region (default us-west-2)")
    p.add_argument("--k8s-version", default="1.31", help="Kubernetes minor of the cluster (default 1.31)")
    p.add_argument("--auth-mode", default="API_AND_CONFIG_MAP", choices=["CONFIG_MAP", "API_AND_CONFIG_MAP", "API"],
                   help="cluster accessConfig.authenticationMode (default API_AND_CONFIG_MAP)")
    p.add_argument("--pod-identity-agent", dest="pod_identity_agent", action="store_true", default=True,
                   help="seed the eks-pod-identity-agent add-on (default)")
    p.add_argument("--no-pod-identity-agent", dest="pod_identity_agent", action="store_false",
                   help="do not seed the eks-pod-identity-agent add-on")
    p.add_argument("--cluster-endpoint", help="API server URL DescribeCluster reports (default: a fake EKS URL)")
    p.add_argument("--cluster-ca-file", help="PEM CA bundle DescribeCluster reports (default: a generated CA)")
    p.add_argument("--transition-polls", type=int, default=1,
                   help="describe calls an EKS update stays in progress for (default 1; 0 = complete at once)")
    p.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error("--port must be between 0 and 65535")
    if args.transition_polls < 0:
        p.error("--transition-polls must be >= 0")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        import warnings

        warnings.filterwarnings("ignore", module="moto")

    import moto
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    from tbaws import eks_ext, patches
    from tbaws.app import TestbedApp
    from tbaws.seed import SeedOptions

    ca_data = None
    if args.cluster_ca_file:
        with open(args.cluster_ca_file, "rb") as fh:
            ca_data = base64.b64encode(fh.read()).decode()
    opts = SeedOptions(
        cluster=args.cluster,
        region=args.region,
        k8s_version=args.k8s_version,
        auth_mode=args.auth_mode,
        pod_identity_agent=args.pod_identity_agent,
        cluster_endpoint=args.cluster_endpoint,
        cluster_ca_data=ca_data,
    )
    try:
        opts.validate()
    except ValueError as exc:
        print(f"launcher: {exc}", file=sys.stderr)
        return 2

    patches.apply_all()
    eks_ext.CONFIG.transition_polls = args.transition_polls
    app = TestbedApp(opts, os.path.abspath(args.handle) if args.handle else None)

    try:
        server = make_server(BIND, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    except OSError as exc:
        print(f"launcher: cannot listen on {BIND}:{args.port}: {exc}", file=sys.stderr)
        return 1
    # do not wait on clients' idle keep-alive connections when shutting down
    server.daemon_threads = True
    server.block_on_close = False
    app.seed()  # after binding, so a busy --port fails fast; connections queue until serve_forever runs
    port = server.server_address[1]
    app.server_info = {
        "endpoint": f"http://{BIND}:{port}",
        "port": port,
        "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "moto_version": moto.__version__,
    }

    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    thread = threading.Thread(target=server.serve_forever, name="testbed-aws-server", daemon=True)
    thread.start()
    app.write_handle()
    print(json.dumps({"event": "ready", "endpoint": app.server_info["endpoint"], "pid": os.getpid(),
                      "handle": app.handle_path}), flush=True)

    while not stop.wait(3600):
        pass
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)
    if app.handle_path:
        try:
            with open(app.handle_path) as fh:
                if json.load(fh).get("pid") == os.getpid():
                    os.remove(app.handle_path)
        except (OSError, ValueError):
            pass
    print(json.dumps({"event": "stopped", "pid": os.getpid()}), flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter finalisation: tearing down moto's object graph takes ~3 s and there is nothing left to save.
    os._exit(code)
