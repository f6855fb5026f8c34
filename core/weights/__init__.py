"""Real weights in one command (`fmu weights pull`): which files a real run needs, where they come
from (sets.py), fetching them resumably with huggingface_hub (pull.py), and the folder layout
`fmu generate --weights DIR`, `fmu doctor` and `fmu score` read back (layout.py)."""
