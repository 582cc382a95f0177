"""Heatmap PNGs: valid files of the size `heatmap_size` promises, and the grid drawn is the table's."""

import math

import pytest
from PIL import Image
from test_compare import CARDIO, EFF, LCP, LLUNG, PTX, RCP, RLUNG, build_db

from labeling.review.compare import CompareOptions, compare_runs, compare_to_reference
from labeling.review.plots import TABLE_METRICS, comparison_heatmap, heatmap_size, runs_heatmap
from labeling.store.store import Store


@pytest.fixture
def compare_db(tmp_path, cli):
    return build_db(tmp_path, cli)[0]


def png_size(path):
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.format, image.size


def test_region_heatmap_is_findings_by_regions_of_the_table(compare_db, tmp_path):
    with Store(compare_db, read_only=True) as store:
        c = compare_runs(store, "llm", "gold")
    path = tmp_path / "region.png"
    grid = comparison_heatmap(c, "f1", path)
    assert grid.shape == (3, 29)
    assert png_size(path) == ("PNG", heatmap_size(3, 29, max(map(len, c.findings)), max(map(len, c.regions))))
    col = {name: i for i, name in enumerate(c.regions)}
    row = {name: i for i, name in enumerate(c.findings)}
    # Effusion at the left costophrenic angle: r2 tp, r5 fn (r3 excluded) -> F1 2/3; right: tp only.
    assert grid[row[EFF], col[LCP]] == pytest.approx(2 / 3)
    assert grid[row[EFF], col[RCP]] == 1.0
    assert grid[row[PTX], col[RLUNG]] == 0.0 and grid[row[PTX], col[LLUNG]] == 0.0
    # Everything else has no positive on either side: masked (blank), not 0 and not 1.
    assert int((~grid.mask).sum()) == 4
    assert grid.mask[row[CARDIO]].all()
    # The pooled cells of a column agree with the per-region table row where one finding is involved.
    region_rows = {r.name: r for r in c.by_region}
    assert grid[row[EFF], col[RCP]] == region_rows[RCP].f1


def test_kappa_heatmap_and_image_level_metric_columns(compare_db, tmp_path):
    with Store(compare_db, read_only=True) as store:
        region = compare_runs(store, "llm", "gold", CompareOptions(uncertain="positive"))
        image = compare_runs(store, "llm", "gold", CompareOptions(level="image", uncertain="positive"))
    kappa = comparison_heatmap(region, "kappa", tmp_path / "kappa.png")
    # Effusion at the left costophrenic angle, uncertain as positive: llm (present, present, absent,
    # none) vs gold (present, present, present, none) over r2-r5 -> (4*3 - (2*3 + 2*1)) / (16 - 8).
    assert kappa[region.findings.index(EFF), region.regions.index(LCP)] == pytest.approx(0.5)
    assert png_size(tmp_path / "kappa.png")[0] == "PNG"
    grid = comparison_heatmap(image, "f1", tmp_path / "image.png")
    assert grid.shape == (3, len(TABLE_METRICS))
    for i, row in enumerate(image.by_finding):
        for j, metric in enumerate(TABLE_METRICS):
            value = getattr(row, metric)
            assert (grid.mask[i, j] and math.isnan(value)) or grid[i, j] == pytest.approx(value)
    assert png_size(tmp_path / "image.png") == (
        "PNG",
        heatmap_size(3, 5, max(map(len, image.findings)), max(map(len, TABLE_METRICS))),
    )


def test_findings_by_runs_heatmap(compare_db, tmp_path):
    with Store(compare_db, read_only=True) as store:
        comparisons = compare_to_reference(
            store, ["llm", "gold"], "chexpert", CompareOptions(level="image", uncertain="positive")
        )
    grid = runs_heatmap(comparisons, "f1", tmp_path / "runs.png")
    assert grid.shape == (len(comparisons[0].findings), 2)
    for j, c in enumerate(comparisons):
        for i, row in enumerate(c.by_finding):
            assert (grid.mask[i, j] and math.isnan(row.f1)) or grid[i, j] == pytest.approx(row.f1)
    # gold vs chexpert, effusion: gold present r2, r3, r5; chexpert present r2, uncertain(->present) r3.
    eff = comparisons[1].findings.index(EFF)
    assert grid[eff, 1] == pytest.approx(2 * 2 / (2 * 2 + 1))
    assert png_size(tmp_path / "runs.png")[0] == "PNG"
    assert not list(tmp_path.glob(".*"))


def test_size_grows_with_the_grid():
    small, large = heatmap_size(3, 5, 10, 10), heatmap_size(53, 29, 10, 10)
    assert large[0] > small[0] and large[1] > small[1]
    assert heatmap_size(53, 29, 36, 24) == (
        round((2.2 + 0.075 * 36 + 0.34 * 29) * 100),
        round((1.6 + 0.075 * 24 + 0.34 * 53) * 100),
    )
