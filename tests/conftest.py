import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

# Tiny models run an order of magnitude faster on one thread than on two contended cores.
torch.set_num_threads(1)

from hub_fixtures import local_hub  # noqa: E402,F401  (a local Hub-compatible server on 127.0.0.1)
