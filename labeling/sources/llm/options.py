"""What defines an LLM run: the server to use (`BackendOptions`), everything stored with the run so
that it can resume (`LabelOptions`), and the request to label with them (`LlmRequest`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from labeling.sources.selection import ReportSelection
from prompts.render import DEFAULT_PROMPT
from schemas.llm_output import MAX_LABELS_PER_SENTENCE


class BackendOptions(BaseModel):
    """Which LLM server to use and how to reach it (labeling, report writing, judging)."""

    model_config = ConfigDict(extra="forbid")
    backend: str = "local"
    base_urls: list[str] = []
    model: str | None = None
    model_path: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    structured_output: str = "auto"
    transport_retries: int = Field(default=4, ge=0, le=20)
    timeout: float = Field(default=120.0, gt=0)
    n_ctx: int = 4096
    poll_interval: float = Field(default=60.0, gt=0)  # openai-batch: most seconds between polls of a batch job
    ray_address: str | None = None  # ray: the cluster to join (None: the one RAY_ADDRESS names, else a local one)
    engine_config: str | None = None  # ray: a JSON or TOML file of vLLM engine settings (vLLM on the cluster's GPUs)


class LabelOptions(BackendOptions):
    """Everything that defines an LLM run; stored with the run (no secrets) so it can resume."""

    unit: str = "sentence"  # sentence (one per request) | sentences (packed, `per_call` a request) | report
    per_call: int = Field(default=16, ge=1, le=256)  # sentences per request with unit "sentences"
    context: int = Field(default=0, ge=0, le=5)
    prompt: str = DEFAULT_PROMPT
    samples: int = Field(default=1, ge=1, le=20)
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = 0
    max_retries: int = Field(default=2, ge=0, le=10)
    concurrency: int = Field(default=4, ge=1, le=512)
    batch_size: int = Field(default=16, ge=1)
    give_up_after: int = Field(default=5, ge=1, le=10_000)  # transport failures in a row that stop the run
    use_cache: bool = True
    vocabulary: str | None = None
    enable: list[str] = []
    # which reports (the fields of a ReportSelection; stored runs keep these names)
    dataset: str | None = None
    report_ids: list[str] = []
    limit: int | None = None
    # Written by clala, not set: each resume's time and the TRANSPORT_OPTIONS it ran with.
    resumes: list[dict[str, Any]] = []
    # Written by clala, not set: message characters sent in the static prefix and in the units.
    prompt_layout: dict[str, Any] = {}
    # Written by clala, not set: the Batch API jobs of an openai-batch run (batch_api.py), so a
    # resumed run collects a job already submitted instead of paying for it again.
    batch_jobs: list[dict[str, Any]] = []

    def selection(self) -> ReportSelection:
        return ReportSelection(dataset=self.dataset, report_ids=self.report_ids, limit=self.limit)

    @property
    def packs(self) -> bool:
        """Whether several sentences go in one request."""
        return self.unit == "sentences" and self.per_call > 1

    @property
    def max_labels(self) -> int | None:
        """The labels a unit may hold (the schema's maxItems): a sentence's, none for a report."""
        return None if self.unit == "report" else MAX_LABELS_PER_SENTENCE

    def decoding(self, dialect: str) -> dict[str, Any]:
        """What changes an answer, in the cache key. A sentence's key is the same packed or alone
        (unit "sentence", max_tokens per sentence, no per_call): see prompts/render.py."""
        temperature = self.temperature if self.temperature is not None else (0.7 if self.samples > 1 else 0.0)
        max_tokens = self.max_tokens or (2048 if self.unit == "report" else 640)
        return {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "max_labels": self.max_labels,
            "seed": self.seed,
            "samples": self.samples,
            "structured_output": dialect,
            "unit": "sentence" if self.unit == "sentences" else self.unit,
            "context": self.context,
        }


# What a resumed run may change: how to reach the server and how hard to try. Every other option
# changes what the run's labels mean (model, prompt, decoding, vocabulary, unit) or which reports
# it covers, and is refused on resume. `structured_output` may be given if it resolves to the
# dialect the run was made with. API keys are never options: only the variable's name is.
TRANSPORT_OPTIONS = (
    "base_urls",
    "api_key_env",
    "timeout",
    "transport_retries",
    "concurrency",
    "batch_size",
    "give_up_after",
    "max_retries",
    "poll_interval",
    "ray_address",
    "engine_config",
)
# The command-line flag of an option, where it is not `--` + the name with dashes.
OPTION_FLAGS = {"base_urls": "--base-url", "report_ids": "--report", "use_cache": "--no-cache"}


def option_flag(name: str) -> str:
    return OPTION_FLAGS.get(name, "--" + name.replace("_", "-"))


class LlmRequest(BaseModel):
    """Label with an LLM: a new run `name` (default: backend-model-time) with `options`, or finish
    run `resume` with its stored options, changed by the TRANSPORT_OPTIONS set in `options`
    (`options.model_fields_set`: those given explicitly; any other option given with another
    value than the run's is refused). `allow_remote`: reports may go to a server that is not on
    this machine."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    options: LabelOptions = Field(default_factory=lambda: LabelOptions())
    resume: str | None = None
    allow_remote: bool = False
