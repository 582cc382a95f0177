"""CLALA-Net: the lesion-aware report generator, its datasets, trainer and evaluation."""
