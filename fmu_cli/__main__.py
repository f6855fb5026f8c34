"""`python -m fmu ...`: the `fmu` command, and the one entry point launchers that start one process
per device use for every command:

    torchrun --nproc_per_node N -m fmu generate MANIFEST --out DIR ...
    torchrun --nproc_per_node N -m fmu train --data data/ --out runs/t ...
    accelerate launch --multi_gpu --num_processes N -m fmu train ...
"""

from .app import main

main()
