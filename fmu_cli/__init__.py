"""fmu's command line: the Typer app, one module per command family (thin: parsing and printing;
the work is in core/ and training/)."""
