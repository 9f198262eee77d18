"""Speed benchmarks of flowjax against its PyTorch peers (torchcfm, Meta's flow_matching).

One entry point writes a JSON file and prints a table:

    python -m benchmarks.run [--suite=train,sample,likelihood,images] [--out=FILE.json]

The peers (torch, torchcfm, flow-matching, torchdiffeq) are the optional `bench` extra; the
library (`flowjax/`) never imports them. See BENCHMARKS.md for the measured figures.
"""
