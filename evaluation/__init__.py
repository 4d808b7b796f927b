"""Pure evaluation logic: metrics, the TF-IDF baseline, plots, the report, the quality gate and serving parity."""
