"""`newtonrewards demo`: the paper's figure end to end on a CPU, judged by the evaluation against the exact ground
truth (config.py: presets; run.py: the resumable stages; analysis.py: reward over SFT; report.py: report.html)."""
