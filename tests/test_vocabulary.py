import json

import pytest

from schemas.vocabulary import CATEGORIES, load_vocabulary

REFERENCE_REGIONS = [
    "right lung",
    "right upper lung zone",
    "right mid lung zone",
    "right lower lung zone",
    "right hilar structures",
    "right apical zone",
    "right costophrenic angle",
    "right hemidiaphragm",
    "left lung",
    "left upper lung zone",
    "left mid lung zone",
    "left lower lung zone",
    "left hilar structures",
    "left apical zone",
    "left costophrenic angle",
    "left hemidiaphragm",
    "trachea",
    "spine",
    "right clavicle",
    "left clavicle",
    "aortic arch",
    "mediastinum",
    "upper mediastinum",
    "svc",
    "cardiac silhouette",
    "cavoatrial junction",
    "right atrium",
    "carina",
    "abdomen",
]


@pytest.fixture(scope="module")
def vocab():
    return load_vocabulary()


def test_regions_are_rgrg_order(vocab):
    assert list(vocab.region_names) == REFERENCE_REGIONS
    assert [r.index for r in vocab.regions] == list(range(29))
    assert vocab.region("left apical zone").laterality == "left"
    assert vocab.region("carina").laterality == "midline"


def test_default_categories_are_lesions(vocab):
    assert vocab.categories == ("anatomicalfinding", "disease")
    counts = {c: sum(f.category == c for f in vocab.findings) for c in vocab.categories}
    assert counts == {"anatomicalfinding": 43, "disease": 10}
    assert "pleural effusion" in vocab.finding_names
    assert "endotracheal tube" not in vocab.finding_names


def test_enable_devices():
    vocab = load_vocabulary(enable=["tubesandlines", "device"])
    assert len(vocab.findings) == 43 + 10 + 12 + 5
    assert vocab.finding("endotracheal tube").chexpert == ("Support Devices",)
    assert "tubesandlines" in vocab.version and "device" in vocab.version
    everything = load_vocabulary(categories=list(CATEGORIES))
    assert len(everything.findings) == 75


def test_unknown_category_is_rejected():
    with pytest.raises(ValueError, match="unknown finding categories"):
        load_vocabulary(enable=["tubes"])


@pytest.mark.parametrize(
    "phrase, regions",
    [
        ("right base", ("right lower lung zone",)),
        ("Right  lower lobe", ("right lower lung zone",)),
        ("lingula", ("left mid lung zone",)),
        ("retrocardiac", ("left lower lung zone",)),
        ("right apex", ("right apical zone",)),
        ("left base", ("left lower lung zone",)),
        ("bibasilar", ("right lower lung zone", "left lower lung zone")),
        ("both lungs", ("right lung", "left lung")),
    ],
)
def test_region_phrases(vocab, phrase, regions):
    assert set(vocab.resolve_region(phrase)) == set(regions)


def test_unknown_region_phrase_resolves_to_nothing(vocab):
    assert vocab.resolve_region("left elbow") == ()


def test_find_regions_prefers_longest_phrase(vocab):
    text = "Opacity at the right lung base and bibasilar atelectasis."
    found = vocab.find_regions(text)
    assert [(text[s:e].lower(), r) for s, e, r in found] == [
        ("right lung base", ("right lower lung zone",)),
        ("bibasilar", ("right lower lung zone", "left lower lung zone")),
    ]


def test_find_findings_with_synonyms(vocab):
    text = "Moderate cardiomegaly. Small bilateral pleural effusions. No pneumothorax."
    assert [f for _, _, f in vocab.find_findings(text)] == [
        "enlarged cardiac silhouette",
        "pleural effusion",
        "pneumothorax",
    ]


def test_allowed_regions(vocab):
    assert vocab.allows("enlarged cardiac silhouette", "cardiac silhouette")
    assert not vocab.allows("enlarged cardiac silhouette", "left apical zone")
    assert vocab.allows("pleural effusion", "right costophrenic angle")
    assert vocab.allows("scoliosis", "spine") and not vocab.allows("scoliosis", "abdomen")
    assert vocab.allows("pneumothorax", None)  # image level


def test_chexpert_mapping(vocab):
    assert set(vocab.chexpert_findings("Cardiomegaly")) == {"enlarged cardiac silhouette"}
    assert "consolidation" in vocab.chexpert_findings("Lung Opacity")
    assert vocab.chexpert_findings("Support Devices") == ()  # devices are not enabled by default
    observations = {o for f in vocab.findings for o in f.chexpert}
    assert observations <= set(vocab.data.chexpert_observations)
    assert "No Finding" not in observations
    with pytest.raises(KeyError):
        vocab.chexpert_findings("Cardiomegally")


def test_vocabulary_file_errors(tmp_path):
    good = json.loads(load_vocabulary().data.model_dump_json())
    broken = dict(good, findings=[dict(good["findings"][0], regions=["left knee"])])
    path = tmp_path / "v.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="unknown region 'left knee'"):
        load_vocabulary(path)
    duplicate = dict(
        good, findings=[good["findings"][0], dict(good["findings"][1], synonyms=[good["findings"][0]["name"]])]
    )
    path.write_text(json.dumps(duplicate))
    with pytest.raises(ValueError, match="belongs to both"):
        load_vocabulary(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_vocabulary(path)
    with pytest.raises(FileNotFoundError):
        load_vocabulary(tmp_path / "missing.json")


def test_report_wording_names_only_known_regions(tmp_path):
    good = json.loads(load_vocabulary().data.model_dump_json())
    path = tmp_path / "v.json"
    systems = [dict(s, regions=["left knee"]) if s["name"] == "hila" else s for s in good["report"]["systems"]]
    path.write_text(json.dumps(dict(good, report=dict(good["report"], systems=systems))))
    with pytest.raises(ValueError, match="report system 'hila': unknown regions"):
        load_vocabulary(path)
    findings = [
        dict(f, report=dict(f["report"], placed={"cardiac silhouette + left knee": "x"}))
        if f["name"] == "enlarged cardiac silhouette"
        else f
        for f in good["findings"]
    ]
    path.write_text(json.dumps(dict(good, findings=findings)))
    with pytest.raises(ValueError, match="report.placed names regions it cannot be in"):
        load_vocabulary(path)


def test_version_changes_with_file_content(tmp_path):
    data = json.loads(load_vocabulary().data.model_dump_json())
    path = tmp_path / "v.json"
    path.write_text(json.dumps(data))
    first = load_vocabulary(path).version
    data["findings"][0]["synonyms"] = [*data["findings"][0]["synonyms"], "brand new phrase"]
    path.write_text(json.dumps(data))
    assert load_vocabulary(path).version != first


def test_findings_record_the_chest_imagenome_hierarchy():
    vocab = load_vocabulary()
    assert vocab.finding_ancestors("consolidation") == ("airspace opacity", "lung opacity")
    assert vocab.finding_ancestors("mass/nodule (not otherwise specified)") == ("lung lesion", "lung opacity")
    assert vocab.finding_ancestors("linear/patchy atelectasis") == ("atelectasis", "lung opacity")
    assert vocab.finding_ancestors("lung opacity") == () and vocab.finding_ancestors("pneumonia") == ()


def test_a_finding_parent_must_be_known_and_acyclic(tmp_path):
    from importlib import resources

    from schemas.vocabulary import DEFAULT_VOCABULARY

    data = json.loads(resources.files("schemas").joinpath("vocabulary_data", DEFAULT_VOCABULARY).read_text())
    by_name = {f["name"]: f for f in data["findings"]}
    by_name["lung opacity"]["parent"] = "consolidation"
    path = tmp_path / "cycle.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="parent findings form a cycle"):
        load_vocabulary(path)
    by_name["lung opacity"]["parent"] = "ground glass"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown parent finding"):
        load_vocabulary(path)


def test_implied_regions_are_the_no_location_rule():
    """A finding whose words name its one place keeps it; one that may be anywhere in the lungs or
    on either side has no region when the sentence names none."""
    vocab = load_vocabulary()
    assert vocab.finding("enlarged cardiac silhouette").implied_regions == ("cardiac silhouette",)
    assert vocab.finding("scoliosis").implied_regions == ("spine",)
    assert vocab.finding("pneumothorax").implied_regions == ()
    assert vocab.finding("elevated hemidiaphragm").implied_regions == ()
