"""A stand-in for an HTTP job launcher (like Posit Workbench's), for the R tests: each POST
carries {"cmd": "<R call>", "environment": [{"name": ..., "value": ...}]}; the server starts
`Rscript -e <call>` with that environment added and answers {"job": k}.
Usage: http_api.py PORTFILE RSCRIPT N (serves N requests, then exits)."""
import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

portfile, rscript, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
jobs = []


class Api(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        job = json.loads(body)
        env = dict(os.environ)
        env.update({e["name"]: e["value"] for e in job.get("environment", [])})
        auth = self.headers.get("Authorization", "")
        jobs.append(subprocess.Popen([rscript, "-e", job["cmd"]], env=env))
        reply = json.dumps({"job": len(jobs), "auth": auth}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Api)
with open(portfile + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(portfile + ".tmp", portfile)
for _ in range(n):
    server.handle_request()
for job in jobs:
    job.wait()
