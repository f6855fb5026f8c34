"""fmu's engine, in layers: a module imports its own layer or the ones below, never above
(tests/test_layers.py reads the import graph and checks it).

    runner/      `fmu generate`: plan -> distribute (devices, ranks) -> worker -> results
    doctor.py    `fmu doctor`: what can run here, asking the packages below
    scoring/     `fmu score`: the paper's metrics, summary, report
    regions/     face parsing into named regions (training's caption-phrase masks)
    model/ faces/ shading/ manifest/ weights/
                 the diffusers model, face analysis, the 3D shading channel, manifest reading,
                 `fmu weights pull` (siblings: they may use each other, without cycles)
    errors, images, digests, devices, boxes, tables, out_lock, home, html_page, native_log, run_record, safe_paths
                 utilities every layer uses (run_record: the run.json every command writes; safe_paths:
                 a listed remote or archive path stays inside its folder)
"""
