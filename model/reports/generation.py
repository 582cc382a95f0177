"""Report generation from a CLALA-Net checkpoint: `clala generate CHECKPOINT --data DIR --name NAME`.

For each study of a split (its first image in split order; one report per study), the model
predicts region-level lesion probabilities; a lesion is predicted in a region when its probability
reaches the checkpoint's threshold for that lesion (chosen on validation). Regions are selected
as `abnormal` (any lesion predicted there) or `all` (every region with a valid box). The region
sentence decoder writes one sentence per selected region (greedy, or beam search with `beams`);
empty sentences are left out. The predicted lesions (probability = the maximum over the regions
the model speaks for; regions = where it passes the threshold) and the sentences become
`ReportInputs`, which `write_reports` turns into FINDINGS and IMPRESSION with the LLM aggregator
(each report checked by the rules' round trip: kept, re-asked once, or replaced) or, without an
LLM, the deterministic writer, which uses the decoder's sentences the rules read as exactly the
lesions predicted in their region and phrases the rest itself. The reports are stored as dataset
`generated:NAME` with their provenance (checkpoint path and sha256, aggregator, prompt, lesions,
region sentences, and how the generation ran), ready for `clala score-reports NAME`.

Decisions:
- Only the lesions the checkpoint's thresholds predict reach `write_reports` (with threshold 0 so
  it keeps them all): the per-lesion thresholds are the model's decision rule, a single global
  cut would override them. Of its lesions, only those the checkpoint marks as reportable
  (`report_lesions`, chosen on validation: the lesions whose predictions at their thresholds
  raise the micro F1 over all lesions, `model.evaluate.metrics.reportable_lesions`) are stated:
  a lesion the model can barely tell has a low F1-maximising cut that flags many regions of most
  images, each a false statement in a report. A checkpoint without the mark (older) states all.
- A checkpoint trained with `--no-decoder` has no sentence decoder. Rather than refuse, its
  region sentences are templates, "<Finding> in the <region>.", one per lesion predicted in a
  selected region (a region with no predicted lesion gets none); the provenance records
  `sentences: template` and the command says so. The reports stay scoreable and comparable.
  Template sentences never reach a report: only decoder sentences are used in FINDINGS.
- The source report of a study is looked up by study id in the checkpoint's training dataset,
  leaving out generated datasets (they reuse the study ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labeling.core.errors import InputError
from labeling.store.store import Store
from model.reports.writer import (
    GENERATED_PREFIX,
    LLMOptions,
    PredictedLesion,
    RegionSentence,
    ReportInputs,
    StoredReports,
    check_generation_name,
    store_generated_reports,
    write_reports,
)

REGION_SELECTIONS = ("abnormal", "all")


@dataclass(kw_only=True)
class GenerateRequest:
    """What `clala generate` writes: one report per study of `split` (at most `limit`) from
    `checkpoint`, the images under `data` (scene graphs under `imagenome`, default `data`),
    stored as generation `name`; `llm`: the aggregator (None: the deterministic fallback)."""

    checkpoint: str | Path
    data: str | Path
    name: str
    split: str = "test"
    imagenome: str | Path | None = None
    regions: str = "abnormal"
    beams: int = 1
    max_new_tokens: int | None = None
    llm: LLMOptions | None = None
    limit: int | None = None
    batch_size: int = 16
    device: str = "auto"
    allow_remote: bool = False

    def __post_init__(self) -> None:
        """Refuse options that cannot work before anything is opened or loaded."""
        from labeling.sources.llm import BACKENDS

        llm, regions, beams, limit = self.llm, self.regions, self.beams, self.limit
        if llm is not None and llm.backend not in BACKENDS:
            raise InputError(f"--llm-backend: {llm.backend!r} is not one of none, {', '.join(BACKENDS)}")
        if regions not in REGION_SELECTIONS:
            raise InputError(f"--regions: {regions!r} is not one of {', '.join(REGION_SELECTIONS)}")
        if beams < 1:
            raise InputError(f"--beams: {beams} is below 1")
        if limit is not None and limit < 1:
            raise InputError(f"--limit: {limit} is below 1")
        check_generation_name(self.name)


@dataclass
class Generation:
    name: str
    dataset: str
    reports: int
    sentences_source: str  # decoder | template
    region_sentences: int
    aggregators: dict[str, int]
    stored: StoredReports
    without_source: int = 0  # studies with no (or no unique) stored source report
    notes: list[str] = field(default_factory=list)


def report_lesions(checkpoint: dict[str, Any]) -> np.ndarray:
    """[L] bool: the checkpoint's lesions a generated report may state (every one for a checkpoint
    saved before the trainer chose them)."""
    marked = checkpoint.get("report_lesions")
    return np.asarray(marked if marked is not None else [True] * len(checkpoint["lesions"]), bool)


def template_sentence(finding: str, region: str) -> str:
    return f"{finding[0].upper()}{finding[1:]} in the {region}."


def _source_keys(store: Store, study_ids: list[str], dataset: str | None) -> dict[str, int]:
    found = store.report_keys(study_ids, by="study_id", dataset=dataset)
    keys = {}
    for study, hits in found.items():
        sources = [key for name, key in hits if not name.startswith(GENERATED_PREFIX)]
        if len(sources) == 1:
            keys[study] = sources[0]
    return keys


def _first_image_per_study(request: GenerateRequest) -> list[Any]:
    """The split's records, one per study (its first image in split order), at most `limit`."""
    from model.data.dataset import load_cohort

    data = request.data
    cohort = load_cohort(data, request.imagenome or data, request.split, exclude_avoided=False)
    records, seen = [], set()
    for record in cohort.records:
        if record.study_id not in seen:
            seen.add(record.study_id)
            records.append(record)
    if request.limit is not None:
        records = records[: request.limit]
    if not records:
        raise InputError(f"{request.imagenome or data}: no images in split {request.split!r}")
    return records


@dataclass
class _ReportPredictor:
    """Turns batches of images into `ReportInputs`: the lesions the checkpoint's thresholds
    predict, and one sentence per selected region (decoder or template)."""

    model: Any
    target: Any  # torch.device
    lesions: list[str]
    thresholds: np.ndarray
    tokenizer: Any  # None: no sentence decoder, template sentences
    request: GenerateRequest

    def __post_init__(self) -> None:
        import torch

        from model.data.batches import allowed_cells

        self.usable_cells = torch.from_numpy(allowed_cells(self.lesions)).to(self.target)
        self.cuts = torch.from_numpy(self.thresholds).to(self.target)

    def batch(
        self, batch: dict[str, Any], records: list[Any], first: int, source_keys: dict[str, int]
    ) -> list[ReportInputs]:
        """The report inputs of one batch, whose records are `records[first:]` (in loader order)."""
        import torch

        from model.data.batches import model_inputs

        inputs = {k: v for k, v in model_inputs(batch, self.target).items() if k in ("image", "boxes", "box_mask")}
        probabilities = torch.sigmoid(self.model.encode(inputs).region_logits.float())  # [B, R, L]
        box_mask = inputs["box_mask"].bool()
        usable = box_mask[..., None] & self.usable_cells[None]
        predicted = (probabilities >= self.cuts) & usable
        selected = predicted.any(dim=-1) if self.request.regions == "abnormal" else box_mask
        texts = self._decoded(inputs, selected)
        probabilities_np, predicted_np = probabilities.cpu().numpy(), predicted.cpu().numpy()
        selected_np, usable_np = selected.cpu().numpy(), usable.cpu().numpy()
        return [
            ReportInputs(
                report_id=study,
                source_report_key=source_keys.get(study),
                image_paths=[str(records[first + b].image_path)],
                region_sentences=self._sentences(b, selected_np[b], predicted_np[b], texts),
                lesions=self._found(probabilities_np[b], predicted_np[b], usable_np[b]),
            )
            for b, study in enumerate(batch["study_id"])
        ]

    def _decoded(self, inputs: dict[str, Any], selected: Any) -> dict[tuple[int, int], str]:
        """(batch index, region index) -> the decoder's sentence, for every selected region."""
        from model.net.decoder import decode_sentences

        if self.tokenizer is None or not selected.any():
            return {}
        ids = self.model.generate_sentences(
            inputs, selected, num_beams=self.request.beams, max_new_tokens=self.request.max_new_tokens
        )
        rows = selected.nonzero().tolist()
        return {(b, r): text for (b, r), text in zip(rows, decode_sentences(self.tokenizer, ids[selected].cpu()))}

    def _sentences(
        self, b: int, selected: np.ndarray, predicted: np.ndarray, texts: dict[tuple[int, int], str]
    ) -> list[RegionSentence]:
        from model.data.dataset import REGION_NAMES

        sentences = []
        for r in np.flatnonzero(selected):
            if self.tokenizer is not None:
                text = texts.get((b, int(r)), "")
                if text.strip():
                    sentences.append(RegionSentence(region=REGION_NAMES[r], text=text))
            else:
                sentences += [
                    RegionSentence(region=REGION_NAMES[r], text=template_sentence(self.lesions[j], REGION_NAMES[r]))
                    for j in np.flatnonzero(predicted[r])
                ]
        return sentences

    def _found(self, probabilities: np.ndarray, predicted: np.ndarray, usable: np.ndarray) -> list[PredictedLesion]:
        """Each predicted lesion: the highest probability over its usable regions, and where it passes."""
        from model.data.dataset import REGION_NAMES

        found = []
        for j, lesion in enumerate(self.lesions):
            where = np.flatnonzero(predicted[:, j])
            if len(where):
                top = float(np.where(usable[:, j], probabilities[:, j], 0.0).max())
                found.append(
                    PredictedLesion(
                        finding=lesion,
                        probability=min(max(top, 0.0), 1.0),
                        regions=tuple(REGION_NAMES[r] for r in where),
                    )
                )
        return found


def generate_reports(store: Store, request: GenerateRequest) -> Generation:
    """Generate and store one report per study of `request.split` (at most `request.limit`); see
    the module doc."""
    import torch

    from model.evaluate.inference import (
        InferenceOptions,
        amp_dtype,
        inference_loader,
        load_inference,
        unlabeled_examples,
    )
    from model.train.checkpoint import load_tokenizer

    check_generation_name(request.name, store)
    options = InferenceOptions(
        request.checkpoint,
        request.data,
        request.imagenome,
        request.split,
        batch_size=request.batch_size,
        device=request.device,
    )
    # The one inference loader and AMP decision of evaluate and predict (model.evaluate.inference).
    inference = load_inference(options)
    ckpt = inference.checkpoint
    lesions = inference.lesions
    thresholds = np.asarray(ckpt["thresholds"], np.float32)
    reportable = report_lesions(ckpt)
    train_config = ckpt["train_config"]
    has_decoder = bool(ckpt["model_config"].get("use_decoder"))
    tokenizer = load_tokenizer(ckpt) if has_decoder else None

    records = _first_image_per_study(request)
    target = inference.device
    loader = inference_loader(unlabeled_examples(records, lesions), inference, options)
    source_keys = _source_keys(store, [r.study_id for r in records], train_config.get("dataset"))

    # A lesion not reportable is never predicted: its cut is above every probability.
    cuts = np.where(reportable, thresholds, np.inf).astype(np.float32)
    predictor = _ReportPredictor(inference.model, target, lesions, cuts, tokenizer, request)
    items: list[ReportInputs] = []
    with torch.no_grad(), torch.autocast(device_type=target.type, dtype=amp_dtype(), enabled=inference.amp):
        for batch in loader:
            items += predictor.batch(batch, records, len(items), source_keys)
    written = write_reports(
        items, request.llm, threshold=0.0, allow_remote=request.allow_remote, decoder_sentences=has_decoder
    )
    provenance = {
        "split": request.split,
        "regions": request.regions,
        "beams": request.beams,
        "max_new_tokens": request.max_new_tokens,
        "sentences": "decoder" if has_decoder else "template",
        "thresholds": dict(zip(lesions, thresholds.tolist())),
        "reported_lesions": [lesion for lesion, kept in zip(lesions, reportable) if kept],
        "epoch": ckpt.get("epoch"),
        "label_spec": ckpt.get("label_spec"),
    }
    stored = store_generated_reports(store, request.name, written, checkpoint=request.checkpoint, provenance=provenance)
    notes = []
    if not has_decoder:
        notes.append(
            "the checkpoint has no sentence decoder (trained with --no-decoder): region sentences are "
            "templates, '<Finding> in the <region>.'"
        )
    without = sum(1 for item in items if item.source_report_key is None)
    if without:
        notes.append(f"{without:,} studies have no single stored source report; score-reports leaves them out")
    return Generation(
        request.name,
        stored.dataset,
        len(items),
        provenance["sentences"],
        sum(len(item.region_sentences) for item in items),
        stored.aggregators,
        stored,
        without,
        notes,
    )


__all__ = [
    "generate_reports",
    "GenerateRequest",
    "Generation",
    "report_lesions",
    "template_sentence",
    "REGION_SELECTIONS",
]
