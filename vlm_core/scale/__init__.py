"""Beyond one machine: the batch runner as a Ray Data predictor (optional extra: pip install 'paligemma-desktop[scale]')."""
