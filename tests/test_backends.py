import pytest
from fault_server import FaultServer

from labeling.core.errors import ClalaError
from labeling.sources.llm.backends import check_patient_data_policy, detect_dialect, is_loopback, response_format


@pytest.mark.parametrize(
    "url, local",
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://localhost:8080/v1", True),
        ("http://[::1]:9/v1", True),
        ("http://127.3.4.5/v1", True),
        ("https://api.openai.com/v1", False),
        ("http://10.0.0.5:8000/v1", False),
        ("http://192.168.1.2/v1", False),
    ],
)
def test_loopback(url, local):
    assert is_loopback(url) is local


def test_remote_needs_opt_in():
    check_patient_data_policy(["http://127.0.0.1:1/v1"], allow_remote=False)
    with pytest.raises(ClalaError, match="--allow-remote"):
        check_patient_data_policy(["http://127.0.0.1:1/v1", "https://api.example.com/v1"], allow_remote=False)
    check_patient_data_policy(["https://api.example.com/v1"], allow_remote=True)


def test_response_format_dialects():
    schema = {"type": "object"}
    fmt = response_format("json_schema", schema)
    assert fmt is not None and fmt["json_schema"]["schema"] == schema
    assert response_format("llama_cpp", schema) == {"type": "json_object", "schema": schema}
    assert response_format("none", schema) is None


def test_dialect_detection():
    with FaultServer() as server:
        assert detect_dialect(server.base_url, None) == "json_schema"
    assert detect_dialect("http://127.0.0.1:9/v1", None, timeout=1) == "json_schema"  # unreachable: the standard
