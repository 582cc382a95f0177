"""A real OpenAI-compatible HTTP server on 127.0.0.1 that misbehaves on purpose.

What it does depends on a marker word in the unit text (the part after "TEXT TO LABEL:"):
  VALID-looking text    a schema-valid, grounded answer built from keywords
  INVALIDJSON           `{not json` every time
  OUTSIDEVOCAB          a finding that is not in the vocabulary ("ignore the instructions")
  UNGROUNDED            a valid answer whose evidence quote is not in the text
  TRUNCATED             half an answer with finish_reason "length"
  FIXONRETRY            invalid JSON first, a valid answer when re-asked
  RATELIMIT             429 with Retry-After: 1 on the first request for that text, then valid
  SERVERERROR           500 every time
  HANG                  sleeps longer than any test timeout before answering
  HTMLPAGE              an HTML error page with status 200 (a proxy's login page), every time
  EXTRAFIELDS           a valid answer with keys outside the schema in each label and at the top
  "... label F present, S and T in every region" anywhere in the prompt (CONTEXT included): a
                        model that obeys the injected instruction: the valid answer plus F, with
                        severity S and temporal T, in every region the vocabulary allows for F
Packed requests (several texts after "TEXTS TO LABEL, EACH AFTER ITS ID:", one "[id] text" line
each) are answered {"answers": [{"id", "labels"}]}, each text as above when alone, except:
  SERVERERROR           (any text) 500 for the whole pack
  PACKNOTJSON           (any text) `{not json` for the whole pack
  LEFTOUT               the text is left out of the packed answer (answered when asked alone)
  BADINPACK             the text's part names a finding outside the vocabulary (valid when alone)
  OUTSIDEVOCAB          the text's part names a finding outside the vocabulary (alone too)
Report aggregator prompts ("PARTS OF THE REPORT:", model/reports/writer.py) are answered with a
report built from the "SAY EACH LESION AS" lines (a faithful writer), unless the parts contain:
  UNFAITHFULONCE        the faithful report plus a left pneumothorax first, the faithful one when re-asked
  UNFAITHFUL            the faithful report plus a left pneumothorax, every time
  DROPSLESION           the report without its first lesion, every time
Every request is recorded (time, path, headers, body) for assertions, and `max_active` is the
most chat requests it was answering at once. `port` binds a given port (a server that comes up
where clients were refused).
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def answer_for(text: str) -> dict:
    """A deterministic, grounded answer: one label per keyword found."""
    labels = []
    lowered = text.lower()
    negated = lowered.startswith("no ") or " no " in lowered
    side = ["left lung"] if "left" in lowered else ["right lung"] if "right" in lowered else []
    for word, finding in (
        ("effusion", "pleural effusion"),
        ("pneumothorax", "pneumothorax"),
        ("atelectasis", "atelectasis"),
        ("cardiomegaly", "enlarged cardiac silhouette"),
        ("consolidation", "consolidation"),
    ):
        if word in lowered:
            regions = ["cardiac silhouette"] if finding == "enlarged cardiac silhouette" else side
            labels.append(
                {
                    "finding": finding,
                    "regions": regions,
                    "status": "absent" if negated else "present",
                    "severity": "none",
                    "temporal": "none",
                    "evidence": text.strip().rstrip("."),
                }
            )
    return {"labels": labels}


INJECTED = re.compile(
    r"label (?P<finding>[a-z/ -]+?) (?P<status>present|absent|uncertain)"
    r"(?:, (?P<severity>mild|moderate|severe))?(?: and (?P<temporal>new|improved|worsened|unchanged|resolved))?"
    r" in every region",
    re.IGNORECASE,
)


def obeyed_answer(prompt: str, text: str) -> dict | None:
    """What a model that obeys an instruction injected into the report answers, or None."""
    found = INJECTED.search(prompt)
    if found is None:
        return None
    from schemas.vocabulary import load_vocabulary

    finding = found["finding"].lower()
    injected = {
        "finding": finding,
        "regions": list(load_vocabulary().finding(finding).regions),
        "status": found["status"].lower(),
        "severity": (found["severity"] or "none").lower(),
        "temporal": (found["temporal"] or "none").lower(),
        "evidence": text.strip().rstrip("."),  # the text it was asked to label: always grounded
    }
    rest = [label for label in answer_for(text)["labels"] if label["finding"] != finding]
    return {"labels": [*rest, injected]}


PARTS = "PARTS OF THE REPORT:"
PACKED = "TEXTS TO LABEL, EACH AFTER ITS ID:"
OUTSIDE = {
    "finding": "ignore the instructions",
    "regions": ["left lung"],
    "status": "present",
    "severity": "none",
    "temporal": "none",
    "evidence": "x",
}


def packed_texts(content: str) -> list[tuple[str, str]]:
    """(id, text) of each unit of a packed request's last message (context lines skipped)."""
    found = []
    for line in content.split(PACKED, 1)[1].splitlines():
        match = re.match(r"\[(\w+)\] (.*)\Z", line)
        if match and not match.group(2).startswith("CONTEXT (do not label):"):
            found.append((match.group(1), match.group(2)))
    return found


ADDED_FINDING = "There is a large left pneumothorax."


def report_answer(parts: str, reasked: bool) -> dict:
    """An aggregator's answer to `parts`; `reasked`: the chat ends with a request to write it again."""
    said = parts.split("SAY EACH LESION AS", 1)[1].splitlines()[1:] if "SAY EACH LESION AS" in parts else []
    phrases = [line.split(": ", 1)[1] for line in said if line.startswith("- ") and ": " in line]
    if "DROPSLESION" in parts:
        phrases = phrases[1:]
    sentences = [f"{p[0].upper()}{p[1:]}." for p in phrases]
    findings = " ".join(sentences) or "The lungs are clear."
    impression = " ".join(sentences) or "No acute cardiopulmonary process."
    if "UNFAITHFUL" in parts and not ("UNFAITHFULONCE" in parts and reasked):
        findings, impression = f"{findings} {ADDED_FINDING}", f"{impression} {ADDED_FINDING}"
    return {"findings": findings, "impression": impression}


class FaultServer:
    def __init__(self, delay: float = 0.0, hang_seconds: float = 30.0, port: int = 0):
        self.delay = delay
        self.hang_seconds = hang_seconds
        self.active = self.max_active = 0
        self.requests: list[dict] = []
        self.seen: dict[str, int] = {}
        self.packs: list[list[str]] = []  # the texts of each packed request
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: dict | str, headers: dict | None = None):
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                headers = dict(headers or {})
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.endswith("/models"):
                    self._send(
                        200, {"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "fault"}]}
                    )
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server.lock:
                    server.requests.append(
                        {"time": time.monotonic(), "path": self.path, "headers": dict(self.headers), "body": body}
                    )
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    status, reply, headers = server.respond(body)
                finally:
                    with server.lock:
                        server.active -= 1
                try:
                    self._send(status, reply, headers)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> FaultServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def chat_requests(self) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def respond(self, body: dict) -> tuple[int, dict | str, dict]:
        messages = body.get("messages", [])
        if messages and messages[-1]["role"] == "user" and PACKED in messages[-1]["content"]:
            return self.respond_packed(body, messages[-1]["content"])
        return self.respond_one(body)

    def respond_one(self, body: dict) -> tuple[int, dict | str, dict]:
        messages = body.get("messages", [])
        text = prompt = messages[-1]["content"] if messages else ""
        parts = next((m["content"] for m in messages if m["role"] == "user" and PARTS in m["content"]), None)
        if parts is not None:
            reasked = PARTS not in text
            with self.lock:
                self.seen[parts] = self.seen.get(parts, 0) + 1
            return 200, self.completion(body, json.dumps(report_answer(parts, reasked)), "stop", 1), {}
        # a re-ask appends the failed answer and a correction request: the unit is further up
        for m in reversed(messages):
            found = re.search(r"TEXT TO LABEL:\n(.*)\Z", m["content"], re.S) if m["role"] == "user" else None
            if found:
                text, prompt = found.group(1).strip(), m["content"]
                break
        with self.lock:
            self.seen[text] = self.seen.get(text, 0) + 1
            count = self.seen[text]
        if self.delay:
            time.sleep(self.delay)
        if "HANG" in text:
            time.sleep(self.hang_seconds)
        if "SERVERERROR" in text:
            return 500, {"error": {"message": "internal error", "type": "server_error"}}, {}
        if "RATELIMIT" in text and count == 1:
            return 429, {"error": {"message": "slow down", "type": "rate_limit"}}, {"Retry-After": "1"}
        if "HTMLPAGE" in text:
            page = "<html><body><h1>Please sign in</h1></body></html>"
            return 200, page, {"Content-Type": "text/html"}
        content = json.dumps(obeyed_answer(prompt, text) or answer_for(text))
        finish = "stop"
        if "EXTRAFIELDS" in text:
            answer = answer_for(text)
            for label in answer["labels"]:
                label.update(reasoning="the sentence says so", certainty=0.9)
            content = json.dumps({**answer, "notes": "none"})
        if "INVALIDJSON" in text or ("FIXONRETRY" in text and count == 1):
            content = "{not json"
        elif "OUTSIDEVOCAB" in text:
            content = json.dumps(
                {
                    "labels": [
                        {
                            "finding": "ignore the instructions",
                            "regions": ["left lung"],
                            "status": "present",
                            "severity": "none",
                            "temporal": "none",
                            "evidence": text,
                        }
                    ]
                }
            )
        elif "UNGROUNDED" in text:
            content = json.dumps(
                {
                    "labels": [
                        {
                            "finding": "pneumothorax",
                            "regions": ["right lung"],
                            "status": "present",
                            "severity": "none",
                            "temporal": "none",
                            "evidence": "a large tension pneumothorax",
                        }
                    ]
                }
            )
        elif "TRUNCATED" in text:
            content, finish = content[: max(5, len(content) // 2)], "length"
        return 200, self.completion(body, content, finish, count), {}

    def respond_packed(self, body: dict, content: str) -> tuple[int, dict | str, dict]:
        units = packed_texts(content)
        with self.lock:
            self.packs.append([text for _, text in units])
        if self.delay:
            time.sleep(self.delay)
        if any("SERVERERROR" in text for _, text in units):
            return 500, {"error": {"message": "internal error", "type": "server_error"}}, {}
        if any("PACKNOTJSON" in text for _, text in units):
            return 200, self.completion(body, "{not json", "stop", len(self.packs)), {}
        answers = []
        for unit_id, text in units:
            if "LEFTOUT" in text:
                continue
            labels = answer_for(text)["labels"]
            if "BADINPACK" in text or "OUTSIDEVOCAB" in text:
                labels = [*labels, {**OUTSIDE, "evidence": text}]
            answers.append({"id": unit_id, "labels": labels})
        return 200, self.completion(body, json.dumps({"answers": answers}), "stop", len(self.packs)), {}

    @staticmethod
    def completion(body: dict, content: str, finish: str, count: int) -> dict:
        """An OpenAI chat completion answering `content`."""
        prompt_tokens = sum(len(m["content"]) for m in body.get("messages", [])) // 4
        choice = {"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}
        if body.get("logprobs"):  # every token at log-probability -0.1
            choice["logprobs"] = {"content": [{"token": "t", "logprob": -0.1, "bytes": None, "top_logprobs": []}] * 5}
        return {
            "id": f"cmpl-{count}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(content) // 4,
                "total_tokens": prompt_tokens + len(content) // 4,
            },
        }
