"""The synthetic cohort: phantom chest radiographs with a known truth, MIMIC-CXR-style reports
that describe it imperfectly, and Chest ImaGenome scene graphs, in the real folder layouts.

`writer.generate_cohort` makes one; `clala import synth-gold` (`labeling.sources.imports.synth_gold`)
turns its gold into two runs (report truth, image truth); `model.data.dataset` reads it like any
MIMIC-CXR-JPG + Chest ImaGenome tree.
"""
