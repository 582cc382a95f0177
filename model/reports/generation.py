"""Report generation from a CLALA-Net checkpoint: `clala generate CHECKPOINT --data DIR --name NAME`.

For each study of a split (its first image in split order; one report per study), the model
predicts region-level lesion probabilities; a lesion is predicted in a region when its probability
reaches the checkpoint's threshold for that lesion (chosen on validation). Regions are selected
as `abnormal` (any lesion predicted there) or `all` (every region with a valid box). The region
sentence decoder writes one sentence per selected region (greedy, or beam search with `beams`);
empty sentences are left out. The predicted lesions (probability = the maximum over the regions
the model speaks for; regions = where it passes the threshold) and the sentences become
`ReportInputs`, which `write_reports` turns into FINDINGS and IMPRESSION with the LLM aggregator
or, without an LLM, the deterministic fallback. The reports are stored as dataset
`generated:NAME` with their provenance (checkpoint path and sha256, aggregator, prompt, lesions,
region sentences, and how the generation ran), ready for `clala score-reports NAME`.

Decisions:
- Only the lesions the checkpoint's thresholds predict reach `write_reports` (with threshold 0 so
  it keeps them all): the per-lesion thresholds are the model's decision rule, a single global
  cut would override them.
- A checkpoint trained with `--no-decoder` has no sentence decoder. Rather than refuse, its
  region sentences are templates, "<Finding> in the <region>.", one per lesion predicted in a
  selected region (a region with no predicted lesion gets none); the provenance records
  `sentences: template` and the command says so. The reports stay scoreable and comparable.
- The source report of a study is looked up by study id in the checkpoint's training dataset,
  leaving out generated datasets (they reuse the study ids).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    generated_dataset,
    store_generated_reports,
    write_reports,
)
from schemas.runs import run_name_problem

REGION_SELECTIONS = ("abnormal", "all")


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


def template_sentence(finding: str, region: str) -> str:
    return f"{finding[0].upper()}{finding[1:]} in the {region}."


def _check_options(
    db: str | Path, name: str, regions: str, beams: int, limit: int | None, llm: LLMOptions | None
) -> None:
    from labeling.sources.llm.backends import BACKENDS

    if llm is not None and llm.backend not in BACKENDS:
        raise InputError(f"--llm-backend: {llm.backend!r} is not one of none, {', '.join(BACKENDS)}")
    if regions not in REGION_SELECTIONS:
        raise InputError(f"--regions: {regions!r} is not one of {', '.join(REGION_SELECTIONS)}")
    if beams < 1:
        raise InputError(f"--beams: {beams} is below 1")
    if limit is not None and limit < 1:
        raise InputError(f"--limit: {limit} is below 1")
    problem = run_name_problem(name)
    if problem:
        raise InputError(f"--name: {problem.replace('run name', 'name')}")
    if not Path(db).is_file():
        raise InputError(f"{db}: database not found")
    with Store(db, read_only=True) as store:
        if store.con.execute("SELECT count(*) FROM reports WHERE dataset = ?", [generated_dataset(name)]).fetchall()[0][
            0
        ]:
            raise InputError(f"{store.path}: generated reports named {name!r} already exist; choose another --name")


def _source_keys(db: str | Path, study_ids: list[str], dataset: str | None) -> dict[str, int]:
    with Store(db, read_only=True) as store:
        found = store.report_keys(study_ids, by="study_id", dataset=dataset)
    keys = {}
    for study, hits in found.items():
        sources = [key for name, key in hits if not name.startswith(GENERATED_PREFIX)]
        if len(sources) == 1:
            keys[study] = sources[0]
    return keys


def generate_reports(
    checkpoint: str | Path,
    db: str | Path,
    data_dir: str | Path,
    name: str,
    split: str = "test",
    imagenome: str | Path | None = None,
    regions: str = "abnormal",
    beams: int = 1,
    max_new_tokens: int | None = None,
    llm: LLMOptions | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    allow_remote: bool = False,
) -> Generation:
    """Generate and store one report per study of `split` (at most `limit`); see the module doc."""
    import torch
    from torch.utils.data import DataLoader

    from model.data.dataset import REGION_NAMES, Examples, RegionDataset, load_cohort
    from model.net.decoder import decode_sentences
    from model.train.loop import (
        BatchCollator,
        allowed_cells,
        load_checkpoint,
        load_tokenizer,
        model_from_checkpoint,
        model_inputs,
        resolve_device,
    )

    _check_options(db, name, regions, beams, limit, llm)
    ckpt = load_checkpoint(checkpoint)
    lesions = list(ckpt["lesions"])
    thresholds = np.asarray(ckpt["thresholds"], np.float32)
    train_config = ckpt["train_config"]
    has_decoder = bool(ckpt["model_config"].get("use_decoder"))
    tokenizer = load_tokenizer(ckpt) if has_decoder else None

    cohort = load_cohort(data_dir, imagenome or data_dir, split, exclude_avoided=False)
    records, seen = [], set()
    for record in cohort.records:
        if record.study_id not in seen:
            seen.add(record.study_id)
            records.append(record)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise InputError(f"{imagenome or data_dir}: no images in split {split!r}")
    shape = (len(records), len(REGION_NAMES), len(lesions))
    examples = Examples(
        records,
        tuple(lesions),
        np.full(len(records), -1, np.int64),
        np.zeros(shape, np.float32),
        np.ones(shape, bool),
        [[""] * len(REGION_NAMES) for _ in records],
    )
    dataset = RegionDataset(examples, image_size=train_config["image_size"], augment=None)
    target = resolve_device(device)
    model = model_from_checkpoint(ckpt, target)
    allowed = allowed_cells(lesions)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=BatchCollator(allowed))
    source_keys = _source_keys(db, [r.study_id for r in records], train_config.get("dataset"))

    items: list[ReportInputs] = []
    usable_cells = torch.from_numpy(allowed).to(target)
    cuts = torch.from_numpy(thresholds).to(target)
    with torch.no_grad():
        for batch in loader:
            inputs = {k: v for k, v in model_inputs(batch, target).items() if k in ("image", "boxes", "box_mask")}
            probabilities = torch.sigmoid(model.encode(inputs).region_logits.float())  # [B, R, L]
            usable = inputs["box_mask"].bool()[..., None] & usable_cells[None]
            predicted = (probabilities >= cuts) & usable
            selected = predicted.any(dim=-1) if regions == "abnormal" else inputs["box_mask"].bool()
            texts: dict[tuple[int, int], str] = {}
            if has_decoder and selected.any():
                ids = model.generate_sentences(inputs, selected, num_beams=beams, max_new_tokens=max_new_tokens)
                rows = selected.nonzero().tolist()
                for (b, r), text in zip(rows, decode_sentences(tokenizer, ids[selected].cpu())):
                    texts[(b, r)] = text
            probabilities, predicted, selected = (
                probabilities.cpu().numpy(),
                predicted.cpu().numpy(),
                selected.cpu().numpy(),
            )
            usable = usable.cpu().numpy()
            for b, study in enumerate(batch["study_id"]):
                index = len(items)
                sentences = []
                for r in np.flatnonzero(selected[b]):
                    if has_decoder:
                        text = texts.get((b, int(r)), "")
                        if text.strip():
                            sentences.append(RegionSentence(region=REGION_NAMES[r], text=text))
                    else:
                        sentences += [
                            RegionSentence(region=REGION_NAMES[r], text=template_sentence(lesions[j], REGION_NAMES[r]))
                            for j in np.flatnonzero(predicted[b, r])
                        ]
                found = []
                for j, lesion in enumerate(lesions):
                    where = np.flatnonzero(predicted[b, :, j])
                    if len(where):
                        top = float(np.where(usable[b, :, j], probabilities[b, :, j], 0.0).max())
                        found.append(
                            PredictedLesion(
                                finding=lesion,
                                probability=min(max(top, 0.0), 1.0),
                                regions=tuple(REGION_NAMES[r] for r in where),
                            )
                        )
                items.append(
                    ReportInputs(
                        report_id=study,
                        source_report_key=source_keys.get(study),
                        image_paths=[str(records[index].image_path)],
                        region_sentences=sentences,
                        lesions=found,
                    )
                )
    written = write_reports(items, llm, threshold=0.0, allow_remote=allow_remote)
    provenance = {
        "split": split,
        "regions": regions,
        "beams": beams,
        "max_new_tokens": max_new_tokens,
        "sentences": "decoder" if has_decoder else "template",
        "thresholds": dict(zip(lesions, thresholds.tolist())),
        "epoch": ckpt.get("epoch"),
        "label_spec": ckpt.get("label_spec"),
    }
    stored = store_generated_reports(db, name, written, checkpoint=checkpoint, provenance=provenance)
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
        name,
        stored.dataset,
        len(items),
        provenance["sentences"],
        sum(len(item.region_sentences) for item in items),
        stored.aggregators,
        stored,
        without,
        notes,
    )


__all__ = ["generate_reports", "Generation", "template_sentence", "REGION_SELECTIONS"]
