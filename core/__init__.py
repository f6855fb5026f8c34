"""fmu core: manifests -> faces -> shading -> model -> images -> scores."""
