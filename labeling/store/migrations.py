"""Ordered schema migrations of the store. Append only: a released migration never changes.

Each migration is (version, description, statements) and runs in one transaction with the
`schema_version` row that records it, so a database is always at exactly one version.
"""

from __future__ import annotations

LABEL_STATUSES = "('present', 'absent', 'uncertain')"

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "reports, sentences, runs, labels, work, failures, llm_cache, experiments, ingests",
        [
            """CREATE TABLE reports (
            report_key   BIGINT PRIMARY KEY,
            dataset      VARCHAR NOT NULL,
            report_id    VARCHAR NOT NULL,
            version      INTEGER NOT NULL CHECK (version >= 1),
            patient_id   VARCHAR,
            study_id     VARCHAR,
            image_paths  VARCHAR[],
            text         VARCHAR NOT NULL,
            sections     JSON,
            text_sha256  VARCHAR NOT NULL,
            metadata     JSON,
            source       VARCHAR,
            ingest_id    INTEGER,
            ingested_at  TIMESTAMP NOT NULL DEFAULT current_timestamp,
            UNIQUE (dataset, report_id, version)
        )""",
            # The latest version of each report; labelers work on these.
            """CREATE VIEW current_reports AS
            SELECT * FROM reports
            QUALIFY row_number() OVER (PARTITION BY dataset, report_id ORDER BY version DESC) = 1""",
            """CREATE TABLE sentences (
            report_key     BIGINT NOT NULL,
            sentence_index INTEGER NOT NULL,
            section        VARCHAR,
            start_char     INTEGER NOT NULL,
            end_char       INTEGER NOT NULL,
            text           VARCHAR NOT NULL,
            norm_sha256    VARCHAR NOT NULL,
            PRIMARY KEY (report_key, sentence_index)
        )""",
            "CREATE SEQUENCE ingest_id_seq START 1",
            """CREATE TABLE ingests (
            ingest_id   INTEGER PRIMARY KEY DEFAULT nextval('ingest_id_seq'),
            source      VARCHAR NOT NULL,
            format      VARCHAR NOT NULL,
            dataset     VARCHAR NOT NULL,
            read        INTEGER NOT NULL,
            added       INTEGER NOT NULL,
            changed     INTEGER NOT NULL,
            unchanged   INTEGER NOT NULL,
            skipped     INTEGER NOT NULL,
            started_at  TIMESTAMP NOT NULL,
            finished_at TIMESTAMP
        )""",
            "CREATE SEQUENCE run_id_seq START 1",
            """CREATE TABLE runs (
            run_id             INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'),
            name               VARCHAR NOT NULL UNIQUE,
            kind               VARCHAR NOT NULL CHECK (kind IN ('llm', 'rules', 'import', 'human', 'derived', 'model')),
            status             VARCHAR NOT NULL CHECK (status IN ('running', 'complete', 'incomplete', 'failed')),
            backend            VARCHAR,
            model              VARCHAR,
            prompt_name        VARCHAR,
            prompt_sha256      VARCHAR,
            vocabulary_version VARCHAR NOT NULL,
            decoding           JSON,
            params             JSON,
            source             VARCHAR,
            created_at         TIMESTAMP NOT NULL DEFAULT current_timestamp,
            finished_at        TIMESTAMP,
            prompt_tokens      BIGINT NOT NULL DEFAULT 0,
            completion_tokens  BIGINT NOT NULL DEFAULT 0
        )""",
            f"""CREATE TABLE labels (
            run_id         INTEGER NOT NULL,
            report_key     BIGINT NOT NULL,
            region         VARCHAR,
            finding        VARCHAR NOT NULL,
            status         VARCHAR NOT NULL CHECK (status IN {LABEL_STATUSES}),
            severity       VARCHAR CHECK (severity IN ('mild', 'moderate', 'severe')),
            temporal       VARCHAR CHECK (temporal IN ('new', 'improved', 'worsened', 'unchanged', 'resolved')),
            evidence_start INTEGER,
            evidence_end   INTEGER,
            evidence_text  VARCHAR,
            confidence     FLOAT CHECK (confidence BETWEEN 0 AND 1)
        )""",
            """CREATE TABLE work (
            run_id     INTEGER NOT NULL,
            unit_key   VARCHAR NOT NULL,
            report_key BIGINT,
            state      VARCHAR NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
            attempts   INTEGER NOT NULL DEFAULT 0,
            last_error VARCHAR,
            updated_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (run_id, unit_key)
        )""",
            """CREATE TABLE failures (
            run_id      INTEGER NOT NULL,
            unit_key    VARCHAR NOT NULL,
            report_key  BIGINT,
            raw_output  VARCHAR,
            error       VARCHAR NOT NULL,
            created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
        )""",
            """CREATE TABLE llm_cache (
            cache_key         VARCHAR PRIMARY KEY,
            model             VARCHAR NOT NULL,
            response          JSON NOT NULL,
            prompt_tokens     INTEGER,
            completion_tokens INTEGER,
            created_at        TIMESTAMP NOT NULL DEFAULT current_timestamp
        )""",
            "CREATE SEQUENCE experiment_id_seq START 1",
            """CREATE TABLE experiments (
            experiment_id   INTEGER PRIMARY KEY DEFAULT nextval('experiment_id_seq'),
            name            VARCHAR NOT NULL,
            label_spec      JSON,
            config          JSON,
            metrics         JSON,
            checkpoint_path VARCHAR,
            status          VARCHAR NOT NULL DEFAULT 'running',
            created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
            updated_at      TIMESTAMP
        )""",
        ],
    ),
    (
        2,
        "rejected_labels; llm_cache records the run that made each entry",
        [
            """CREATE TABLE rejected_labels (
            run_id     INTEGER NOT NULL,
            unit_key   VARCHAR NOT NULL,
            report_key BIGINT NOT NULL,
            finding    VARCHAR,
            regions    VARCHAR[],
            status     VARCHAR,
            evidence   VARCHAR,
            reason     VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp
        )""",
            "ALTER TABLE llm_cache ADD COLUMN run_id INTEGER",
        ],
    ),
    (
        3,
        "runs: statuses partial (reports failed validation) and interrupted (writer gone); unknown answer keys",
        # DuckDB cannot alter a CHECK constraint: the table is rebuilt with the same rows.
        [
            """CREATE TABLE runs_v3 (
            run_id             INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'),
            name               VARCHAR NOT NULL UNIQUE,
            kind               VARCHAR NOT NULL CHECK (kind IN ('llm', 'rules', 'import', 'human', 'derived', 'model')),
            status             VARCHAR NOT NULL CHECK (status IN ('running', 'complete', 'partial',
                                                                  'incomplete', 'interrupted', 'failed')),
            backend            VARCHAR,
            model              VARCHAR,
            prompt_name        VARCHAR,
            prompt_sha256      VARCHAR,
            vocabulary_version VARCHAR NOT NULL,
            decoding           JSON,
            params             JSON,
            source             VARCHAR,
            created_at         TIMESTAMP NOT NULL DEFAULT current_timestamp,
            finished_at        TIMESTAMP,
            prompt_tokens      BIGINT NOT NULL DEFAULT 0,
            completion_tokens  BIGINT NOT NULL DEFAULT 0,
            unknown_keys       BIGINT NOT NULL DEFAULT 0
        )""",
            """INSERT INTO runs_v3 (run_id, name, kind, status, backend, model, prompt_name, prompt_sha256,
                                vocabulary_version, decoding, params, source, created_at, finished_at,
                                prompt_tokens, completion_tokens)
            SELECT run_id, name, kind, status, backend, model, prompt_name, prompt_sha256, vocabulary_version,
                   decoding, params, source, created_at, finished_at, prompt_tokens, completion_tokens FROM runs""",
            "DROP TABLE runs",
            "ALTER TABLE runs_v3 RENAME TO runs",
        ],
    ),
    (
        4,
        "samples of a run's cells with their inclusion probabilities; estimates of a run's quality from them",
        [
            "CREATE SEQUENCE sample_id_seq START 1",
            """CREATE TABLE samples (
            sample_id  INTEGER PRIMARY KEY DEFAULT nextval('sample_id_seq'),
            run_id     INTEGER NOT NULL,
            strategy   VARCHAR NOT NULL CHECK (strategy IN ('uniform', 'stratified', 'suspicion')),
            seed       BIGINT NOT NULL,
            n          INTEGER NOT NULL,
            created_at TIMESTAMP NOT NULL DEFAULT current_timestamp,
            params     JSON
        )""",
            """CREATE TABLE sample_cells (
            sample_id             INTEGER NOT NULL,
            report_key            BIGINT NOT NULL,
            region                VARCHAR NOT NULL,
            finding               VARCHAR NOT NULL,
            predicted             VARCHAR NOT NULL
                                  CHECK (predicted IN ('present', 'uncertain', 'absent', 'unmentioned')),
            stratum               VARCHAR NOT NULL,
            inclusion_probability DOUBLE NOT NULL CHECK (inclusion_probability > 0 AND inclusion_probability <= 1),
            PRIMARY KEY (sample_id, report_key, region, finding)
        )""",
            "CREATE SEQUENCE estimate_id_seq START 1",
            """CREATE TABLE estimates (
            estimate_id     INTEGER PRIMARY KEY DEFAULT nextval('estimate_id_seq'),
            run_id          INTEGER NOT NULL,
            sample_id       INTEGER NOT NULL,
            reviewed_run_id INTEGER NOT NULL,
            created_at      TIMESTAMP NOT NULL DEFAULT current_timestamp,
            result          JSON NOT NULL
        )""",
        ],
    ),
]

LATEST_VERSION = MIGRATIONS[-1][0]
