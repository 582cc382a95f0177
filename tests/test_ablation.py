"""The ablation helper through the real CLI: four variants trained on the same data and seeds,
each missing exactly its component, evaluated and tabulated."""

from __future__ import annotations

import pytest
from test_trainer import LESIONS, make_cohort, tiny_config

from labeling.core.errors import InputError
from model.experiments.ablation import VARIANTS, ablate
from model.train.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("ablation"), n=56, seed=9, valid=10, test=10)


@pytest.mark.slow  # four trainings: about 20 s
def test_ablate_trains_each_variant_without_its_component(cohort, tmp_path, cli):
    cohort_dir, db = cohort
    folder = tmp_path / "abl"
    code, out, err = cli(
        "ablate",
        "--run",
        "gold-report",
        "--data",
        cohort_dir,
        "--db",
        db,
        "--findings",
        LESIONS[0],
        "--findings",
        LESIONS[1],
        "--image-size",
        64,
        "--batch-size",
        8,
        "--epochs",
        1,
        "--backbone",
        "test_resnet",
        "--d-model",
        32,
        "--no-decoder",
        "--model-option",
        "lca_heads=2",
        "--model-option",
        "text_hidden_size=32",
        "--model-option",
        "text_layers=1",
        "--model-option",
        "llcl_projection_dim=16",
        "--model-option",
        "itcl_projection_dim=16",
        "--checkpoint-dir",
        folder,
        "--threads",
        2,
        "--seed",
        4,
    )
    assert code == 0, err
    for variant in VARIANTS:
        assert variant in out
    configs = {v: load_checkpoint(folder / v / "best.pt") for v in VARIANTS}
    flags = {v: tuple(configs[v]["model_config"][k] for k in ("use_lca", "use_llcl", "use_itcl")) for v in VARIANTS}
    assert flags == {
        "full": (True, True, True),
        "no-lca": (False, True, True),
        "no-llcl": (True, False, True),
        "no-itcl": (True, True, False),
    }
    sizes = {v: sum(t.numel() for t in configs[v]["model_state"].values()) for v in VARIANTS}
    assert sizes["no-lca"] < sizes["full"] and sizes["no-llcl"] < sizes["full"] and sizes["no-itcl"] < sizes["full"]
    assert all(configs[v]["train_config"]["seed"] == 4 for v in VARIANTS)
    assert all(configs[v]["lesions"] == LESIONS for v in VARIANTS)


def test_ablate_rejects_unknown_variant_and_resume(cohort, tmp_path):
    config = tiny_config(*cohort, checkpoints=tmp_path / "x")
    with pytest.raises(InputError, match="'no-brain' is not one of"):
        ablate(config, ["full", "no-brain"])
    config.resume = str(tmp_path / "x" / "last.pt")
    with pytest.raises(InputError, match="from scratch"):
        ablate(config)
    assert not (tmp_path / "x").exists()
