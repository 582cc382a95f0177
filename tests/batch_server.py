"""A real OpenAI Batch API server on 127.0.0.1 (files and batches endpoints) for tests.

It answers each line of a batch's input file as tests/fault_server.py answers the same chat
request online (the same marker words: a line the online server answers 500, SERVERERROR, goes to
the batch's error file with that status), so a batch run's labels can be compared with an online
run's. Endpoints, as OpenAI's:

  POST /v1/files                  multipart (purpose=batch, file): the uploaded JSONL's file object
  GET  /v1/files/{id}/content     a file's bytes (the input, the output, the error file)
  POST /v1/batches                {input_file_id, endpoint, completion_window}: a batch, validating
  GET  /v1/batches/{id}           the batch: validating -> in_progress -> finalizing -> completed
  GET  /v1/batches?limit=N&after  the batches, newest first
  POST /v1/batches/{id}/cancel    cancelling, then cancelled

What a test controls:
  hold                  a threading.Event: while cleared, batches stay in_progress (set it to let them finish)
  end_as                "failed", "expired" or "cancelled": the next batch ends so instead of completed
                        (expired, cancelled: the first half of its lines answered, the rest in the error
                        file as batch_expired or batch_cancelled; failed: no output, `errors` naming line 1)
  create_delay          seconds before POST /v1/batches answers (the batch exists at once)
  redirect              a URL: every POST is answered 307 to it
POST /v1/chat/completions answers online, as tests/fault_server.py does.
Every request is recorded (method, path, headers) in `calls`; `creations` are the batches created.
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler

from fault_server import FaultServer


class BatchServer(FaultServer):
    def __init__(self, end_as: str | None = None, create_delay: float = 0.0, redirect: str | None = None):
        super().__init__()
        self.end_as = end_as
        self.redirect = redirect
        self.create_delay = create_delay
        self.hold = threading.Event()
        self.hold.set()
        self.files: dict[str, dict] = {}  # id -> {"object": "file", ..., "content": bytes}
        self.batches: dict[str, dict] = {}
        self.creations: list[dict] = []
        self.calls: list[dict] = []
        self._ids = itertools.count(1)
        self.httpd.RequestHandlerClass = self._handler()  # pyright: ignore[reportAttributeAccessIssue]

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids):04d}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict | bytes, content_type: str = "application/json"):
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self) -> None:
                with server.lock:
                    server.calls.append({"method": self.command, "path": self.path, "headers": dict(self.headers)})

            def do_GET(self):
                self._record()
                path, _, query = self.path.partition("?")
                parts = path.strip("/").split("/")  # v1, files|batches, ...
                if parts[1:2] == ["files"] and len(parts) == 4 and parts[3] == "content":
                    found = server.files.get(parts[2])
                    if found is None:
                        return self._send(404, {"error": {"message": f"no file {parts[2]}"}})
                    return self._send(200, found["content"], "application/jsonl")
                if parts[1:2] == ["batches"] and len(parts) == 3:
                    batch = server.batches.get(parts[2])
                    return self._send(200, batch) if batch else self._send(404, {"error": {"message": "no batch"}})
                if parts[1:] == ["batches"]:
                    return self._send(200, server.listing(query))
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                self._record()
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if server.redirect:
                    self.send_response(307)
                    self.send_header("Location", server.redirect)
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                parts = self.path.strip("/").split("/")
                if self.path.endswith("/chat/completions"):  # the online path, for comparisons
                    body = json.loads(data)
                    with server.lock:
                        server.requests.append({"time": time.monotonic(), "path": self.path, "body": body})
                    status, reply, _ = server.respond(body)
                    return self._send(status, reply if isinstance(reply, dict) else reply.encode())
                if parts[1:] == ["files"]:
                    return self._send(*server.upload(self.headers.get("Content-Type", ""), data))
                if parts[1:] == ["batches"]:
                    return self._send(*server.create(json.loads(data)))
                if parts[1:2] == ["batches"] and parts[3:] == ["cancel"] and parts[2] in server.batches:
                    server.batches[parts[2]]["status"] = "cancelling"
                    return self._send(200, server.batches[parts[2]])
                self._send(404, {"error": {"message": "not found"}})

        return Handler

    def upload(self, content_type: str, data: bytes) -> tuple[int, dict]:
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + data
        )
        fields = {
            part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()
        }
        if fields.get("purpose") != b"batch" or not fields.get("file"):
            return 400, {"error": {"message": "purpose must be batch, with a file"}}
        content = fields["file"]
        assert isinstance(content, bytes)
        file_id = self._new_id("file")
        self.files[file_id] = {"id": file_id, "object": "file", "purpose": "batch", "bytes": len(content),
                               "content": content}  # fmt: skip
        return 200, {k: v for k, v in self.files[file_id].items() if k != "content"}

    def create(self, request: dict) -> tuple[int, dict]:
        if request.get("input_file_id") not in self.files or request.get("endpoint") != "/v1/chat/completions":
            return 400, {"error": {"message": "unknown input file or endpoint"}}
        batch_id = self._new_id("batch")
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": request["endpoint"],
            "input_file_id": request["input_file_id"],
            "completion_window": request.get("completion_window"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "errors": None,
            "created_at": int(time.time()),
            "metadata": request.get("metadata"),
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
        }
        with self.lock:
            self.batches[batch_id] = batch
            self.creations.append(batch)
        threading.Thread(target=self.work, args=(batch,), daemon=True).start()
        time.sleep(self.create_delay)
        return 200, batch

    def listing(self, query: str) -> dict:
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        newest_first = sorted(self.batches.values(), key=lambda b: b["id"], reverse=True)
        if "after" in params:
            newest_first = [b for b in newest_first if b["id"] < params["after"]]
        page = newest_first[: int(params.get("limit", 20))]
        return {"object": "list", "data": page, "has_more": len(newest_first) > len(page),
                "last_id": page[-1]["id"] if page else None}  # fmt: skip

    def work(self, batch: dict) -> None:
        """Validate, answer each line as the online server would, and finish the batch."""
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]]["content"].splitlines() if line]
        batch["request_counts"]["total"] = len(lines)
        batch["status"] = "in_progress"
        self.hold.wait()
        end_as, self.end_as = self.end_as, None
        if end_as == "failed":
            error = {"code": "invalid_request", "line": 1, "message": "the model is not available for batches"}
            batch["errors"] = {"object": "list", "data": [error]}
            batch["status"] = "failed"
            return
        answered = lines[: len(lines) // 2] if end_as in ("expired", "cancelled") else lines
        output, errors = [], []
        for n, line in enumerate(answered):
            status, reply, _ = self.respond(line["body"])
            response = {"status_code": status, "request_id": f"req_{n}", "body": reply}
            entry = {"id": f"batch_req_{n}", "custom_id": line["custom_id"], "response": response, "error": None}
            (output if status == 200 else errors).append(entry)
        for line in lines[len(answered) :]:
            error = {"code": f"batch_{end_as}", "message": f"batch {end_as}"}
            errors.append({"id": "batch_req_x", "custom_id": line["custom_id"], "response": None, "error": error})
        batch["status"] = "finalizing"
        for kind, entries in (("output_file_id", output), ("error_file_id", errors)):
            if entries:
                file_id = self._new_id("file")
                content = "".join(json.dumps(e) + "\n" for e in entries).encode()
                self.files[file_id] = {"id": file_id, "object": "file", "purpose": "batch_output", "content": content}
                batch[kind] = file_id
        batch["request_counts"].update(completed=len(output), failed=len(errors))
        batch["status"] = end_as or "completed"

    def __enter__(self) -> BatchServer:
        super().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hold.set()  # let waiting workers end
        super().__exit__(*exc)
